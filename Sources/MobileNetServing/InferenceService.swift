import Foundation
import MobileNetANN
import MobileNetModel
import MobileNetSearch

/// One class of a classification result.
public struct ClassificationEntry: Sendable, Hashable, Codable {
    /// 1 for the most likely class.
    public var rank: Int
    /// The class's index in the model's output.
    public var index: Int
    /// The class name.
    public var label: String
    /// The WordNet synset id of an ImageNet class; nil for other classes.
    public var synset: String?
    /// The probability, 0...1.
    public var probability: Float
}

/// The result of classifying one image.
public struct ClassificationResponse: Sendable, Hashable, Codable {
    /// The model's name.
    public var model: String
    /// The `top` most likely classes, best first.
    public var predictions: [ClassificationEntry]
}

/// The result of embedding one image.
public struct EmbeddingResponse: Sendable, Hashable, Codable {
    /// The model's name.
    public var model: String
    /// The embedding's length (1280 for alpha up to 1.0).
    public var dimension: Int
    /// The pooled embedding, values 0...6.
    public var embedding: [Float]

    /// A response for `model`'s `embedding` of length `dimension`.
    public init(model: String, dimension: Int, embedding: [Float]) {
        self.model = model
        self.dimension = dimension
        self.embedding = embedding
    }

    /// The response as JSON, `{"dimension":...,"embedding":[...],"model":"..."}` (sorted keys,
    /// as ``ServingJSON/encode(_:)`` would write it, several times faster).
    public var jsonData: Data {
        var out = "{\"dimension\":\(dimension),\"embedding\":"
        out.reserveCapacity(64 + embedding.count * 12)
        ServingJSON.append(embedding, to: &out)
        out += ",\"model\":"
        ServingJSON.append(string: model, to: &out)
        out += "}"
        return Data(out.utf8)
    }
}

/// What the server serves, for a client that wants to choose (the page at `/`): `GET /v1/catalog`.
public struct ServingCatalog: Sendable, Hashable, Codable {
    /// One served model.
    public struct Model: Sendable, Hashable, Codable {
        /// The served name.
        public var name: String
        /// What the model gives (`imagenet-classifier`, `embedder`, `trained-classifier`, `keras-classifier`).
        public var kind: ServedModelKind
        /// Whether `/v1/classify` takes it.
        public var classifier: Bool
        /// The number of classes (0 for an embedder).
        public var classes: Int
        /// The input the network runs at, `[height, width]` pixels (any image size is resized to it).
        public var input: [Int]
    }
    /// One served image index.
    public struct Index: Sendable, Hashable, Codable {
        /// The served name.
        public var name: String
        /// How many images it holds.
        public var images: Int
        /// The approximate-search structure queries go through (`Flat`, `IVF1024,Flat`, `HNSW32,Flat`;
        /// FAISS's terms), or nil for exact search.
        public var ann: String?
    }
    /// The models, in the order they were given.
    public var models: [Model]
    /// The indexes, in the order they were given.
    public var indexes: [Index]
}

/// What a serving front end calls: every protocol's requests decoded, checked against the
/// limits, run through the model's batcher and encoded. An HTTP layer only routes, reads the
/// body (within ``ServingLimits/maxBodyBytes``) and maps ``ServingError`` to status codes.
public final class InferenceService: Sendable {
    /// The served models.
    public let registry: ModelRegistry
    /// The request limits.
    public let limits: ServingLimits

    /// Creates the service over loaded models.
    public init(registry: ModelRegistry, limits: ServingLimits = ServingLimits()) {
        self.registry = registry
        self.limits = limits
    }

    // MARK: TensorFlow Serving

    /// `GET /v1/models/{name}[/versions/{v}]`.
    ///
    /// - Throws: ``ServingError/modelNotFound(name:available:)``, ``ServingError/versionNotFound(model:version:available:)``.
    public func tfServingStatus(model name: String, version: String? = nil) throws(ServingError) -> TFServing.ModelStatus {
        if let version { return TFServing.ModelStatus(versions: [try registry.model(named: name, version: version)]) }
        return TFServing.ModelStatus(versions: try registry.versions(of: name), retired: registry.retiredVersions(of: name), failed: registry.failedVersions(of: name))
    }

    /// `GET /v1/models/{name}[/versions/{v}]/metadata`.
    ///
    /// - Throws: as ``tfServingStatus(model:version:)``.
    public func tfServingMetadata(model name: String, version: String? = nil) throws(ServingError) -> TFServing.ModelMetadata {
        TFServing.ModelMetadata(model: try registry.model(named: name, version: version))
    }

    /// `POST /v1/models/{name}[/versions/{v}]:predict`: decodes the body (see
    /// ``TFServing/decodePredict(_:model:limits:)``), runs the images and encodes the response.
    ///
    /// - Returns: the JSON response body.
    /// - Throws: ``ServingError``: an unknown model or version, a request that does not fit,
    ///   an image that cannot be decoded, a full queue, a network failure.
    public func tfServingPredict(model name: String, version: String? = nil, body: Data) async throws(ServingError) -> Data {
        let model = try registry.model(named: name, version: version)
        let limits = limits
        let request = try await RequestWork.run(for: name) { () throws(ServingError) in try TFServing.decodePredict(body, model: model, limits: limits) }
        let outputs = try await run(request.images, on: model)
        return TFServing.encodePredictResponse(outputs, format: request.format)
    }

    // MARK: KServe v2

    /// `GET /v2/models/{name}[/versions/{v}]`.
    ///
    /// - Throws: as ``tfServingStatus(model:version:)``.
    public func kserveMetadata(model name: String, version: String? = nil) throws(ServingError) -> KServe.ModelMetadata {
        KServe.ModelMetadata(model: try registry.model(named: name, version: version), versions: try registry.versions(of: name).map(\.version))
    }

    /// `POST /v2/models/{name}[/versions/{v}]/infer`: decodes the body (see
    /// ``KServe/decodeInfer(_:model:limits:)``), runs the images and encodes the response.
    ///
    /// - Returns: the JSON response body.
    /// - Throws: as ``tfServingPredict(model:version:body:)``.
    public func kserveInfer(model name: String, version: String? = nil, body: Data) async throws(ServingError) -> Data {
        let model = try registry.model(named: name, version: version)
        let limits = limits
        let request = try await RequestWork.run(for: name) { () throws(ServingError) in try KServe.decodeInfer(body, model: model, limits: limits) }
        let outputs = try await run(request.images, on: model)
        return KServe.encodeInferResponse(outputs, model: model, id: request.id)
    }

    // MARK: Plain

    /// The served models and indexes.
    public func catalog() -> ServingCatalog {
        ServingCatalog(
            models: registry.models.map {
                .init(name: $0.name, kind: $0.kind, classifier: $0.kind.isClassifier, classes: $0.kind.isClassifier ? $0.classes.count : 0,
                      input: [$0.inputHeight, $0.inputWidth])
            },
            indexes: registry.indexes.map { .init(name: $0.name, images: $0.search.count, ann: $0.ann?.kind.description) })
    }

    /// An indexed image's bytes, to show a similarity match: only paths the index holds, at most
    /// ``ServingLimits/maxBodyBytes``.
    ///
    /// - Throws: ``ServingError/indexNotFound(name:available:)``, ``ServingError/imageNotFound(index:file:reason:)``.
    public func indexedImage(index name: String, file: String) throws(ServingError) -> IndexedImage {
        try registry.index(named: name).image(file: file, maxBytes: limits.maxBodyBytes)
    }

    /// Classifies one encoded image.
    ///
    /// - Parameters:
    ///   - name: a classifier's name.
    ///   - image: the encoded image (JPEG, PNG, WebP, GIF, BMP).
    ///   - top: how many classes, 1 to ``ServingLimits/maxTopK``.
    /// - Throws: ``ServingError/invalidInput(field:problem:)`` for an embedder or a bad `top`,
    ///   ``ServingError/invalidImage(field:problem:)``, and as ``tfServingPredict(model:version:body:)``.
    public func classify(model name: String, image: Data, top: Int) async throws(ServingError) -> ClassificationResponse {
        let model = try registry.model(named: name)
        guard model.kind.isClassifier else {
            throw .invalidInput(field: "model", problem: "'\(name)' is an embedder (a weight file without the top); classify needs a classifier")
        }
        guard (1...limits.maxTopK).contains(top) else { throw .invalidInput(field: "top", problem: "must be between 1 and \(limits.maxTopK), got \(top)") }
        let outputs = try await run([.encoded(image, field: "body")], on: model)
        let ranked = model.topK(outputs.probabilities?.first ?? [], k: top)
        return ClassificationResponse(model: name, predictions: ranked.enumerated().map { rank, p in
            ClassificationEntry(rank: rank + 1, index: p.index, label: p.name, synset: p.synset.isEmpty ? nil : p.synset, probability: p.score)
        })
    }

    /// The pooled embedding of one encoded image (any model: a classifier's comes from the same pass).
    ///
    /// - Throws: ``ServingError/invalidImage(field:problem:)``, and as ``tfServingPredict(model:version:body:)``.
    public func embed(model name: String, image: Data) async throws(ServingError) -> EmbeddingResponse {
        let model = try registry.model(named: name)
        let outputs = try await run([.encoded(image, field: "body")], on: model)
        return EmbeddingResponse(model: name, dimension: model.embeddingWidth, embedding: outputs.embeddings.first ?? [])
    }

    /// The indexed images most similar to one encoded image, by cosine similarity of the
    /// embeddings (the query is embedded with the index's backbone and preprocessing); through
    /// the index's FAISS file when one is loaded (``ServedIndex/ann``), else exact.
    ///
    /// - Parameters:
    ///   - name: an index's name.
    ///   - image: the encoded image.
    ///   - top: how many matches, 1 to ``ServingLimits/maxTopK``.
    ///   - parameters: IVF `nprobe` / HNSW `efSearch` for this query (nil: the file's stored
    ///     values); each only for an index served with a file of that structure.
    /// - Throws: ``ServingError/indexNotFound(name:available:)``, ``ServingError/invalidImage(field:problem:)``,
    ///   ``ServingError/invalidInput(field:problem:)`` for a bad `top`, `nprobe` or `ef_search` (out
    ///   of range, or given for an index whose search does not take it), and as ``tfServingPredict(model:version:body:)``.
    public func similar(index name: String, image: Data, top: Int, parameters: ANNSearchParameters = ANNSearchParameters()) async throws(ServingError) -> SimilarityResponse {
        let index = try registry.index(named: name)
        guard (1...limits.maxTopK).contains(top) else { throw .invalidInput(field: "top", problem: "must be between 1 and \(limits.maxTopK), got \(top)") }
        // Checked before the query is embedded: a parameter the index's search does not take
        // (an error, not silently ignored) or out of range.
        if let (parameter, problem) = parameters.problem(for: index.ann?.kind) {
            throw .invalidInput(field: Self.field(parameter), problem: "index '\(name)': \(problem)")
        }
        let batcher = try registry.batcher(forIndex: name)
        let (embedder, maxPixels) = (index.embedder, limits.maxImagePixels)
        let outputs: ServedOutputs
        do {
            outputs = try await batcher.submit(preparing: { try await RequestImageDecoder.preprocess([.encoded(image, field: "body")], for: embedder, maxPixels: maxPixels) })
        } catch let error as ServingError { throw error } catch {
            throw .inferenceFailed(model: name, reason: String(describing: error))
        }
        let matches: [SimilarityMatch]
        do { matches = try index.matches(for: outputs.embeddings.first ?? [], top: top, parameters: parameters) } catch let error as ANNError {
            if case .invalidArgument(let problem) = error { throw .invalidInput(field: "query", problem: problem) }
            throw .inferenceFailed(model: name, reason: error.description)
        } catch {
            throw .invalidImage(field: "body", problem: String(describing: error))
        }
        return SimilarityResponse(index: name, matches: matches.enumerated().map { SimilarityEntry(rank: $0.offset + 1, file: $0.element.identifier, similarity: $0.element.similarity) })
    }

    /// The HTTP API's name of a search parameter.
    static func field(_ parameter: ANNSearchParameters.Parameter) -> String {
        switch parameter {
        case .nprobe: "nprobe"
        case .efSearch: "ef_search"
        }
    }

    /// Preprocesses the images and runs them through the model's batcher.
    ///
    /// - Throws: ``ServingError``.
    public func run(_ images: [RequestImage], on model: ServedModel) async throws(ServingError) -> ServedOutputs {
        try limits.checkImageCount(Int64(images.count), field: "inputs")
        let batcher = try registry.batcher(for: model)
        let maxPixels = limits.maxImagePixels
        do {
            return try await batcher.submit(preparing: { try await RequestImageDecoder.preprocess(images, for: model, maxPixels: maxPixels) })
        } catch let error as ServingError {
            throw error
        } catch {
            throw .inferenceFailed(model: model.name, reason: String(describing: error))
        }
    }
}
