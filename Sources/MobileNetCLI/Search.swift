import ArgumentParser
import Foundation
import MobileNet

/// `mobilenet index add|sync|stats|export`: a persistent image index for similarity search.
struct Index: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Build and maintain an image index (SQLite) for `similar` and `duplicates`.",
        discussion: """
            The index file stores, for each image, its path, content hash (SHA-256), size and \
            modification time, and one L2-normalised-on-load embedding per distinct content, made \
            by one backbone (alpha, input size, pooling, weight file hash). The index refuses \
            images or queries from another backbone. It is the same SQLite format as the \
            transfer-learning embedding cache.
            """,
        subcommands: [Add.self, Sync.self, Stats.self, Export.self]
    )

    struct IndexOption: ParsableArguments {
        @Option(name: .long, help: ArgumentHelp("The index database file.", valueName: "path"))
        var index: String

        var url: URL { URL(fileURLWithPath: index) }
    }

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Embed new or changed images of files and directories into the index.")

        @OptionGroup var indexOption: IndexOption
        @OptionGroup var model: ModelOptions

        @OptionGroup var decode: DecodeOptions
        @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
        var recursive = false
        @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
        var images: [String]

        func run() async throws {
            let (files, missing) = collectImageFiles(images, recursive: recursive)
            for message in missing { printError("error: \(message)") }
            do {
                let backbone = try await Backbone.load(model: model)
                let index = try ImageIndex(url: indexOption.url)
                try index.checkCompatible(backbone.identity)
                let embedder = try CachedEmbedder(model: backbone.network, backbone: backbone.identity, store: index.store, batchSize: model.batchSize, decodeThreads: decode.threads)
                let result = try embedWithProgress(embedder, files: files.map(\.standardizedFileURL), label: "index")
                printError("index: \(try index.files().count) images in \(indexOption.index)")
                if !missing.isEmpty || !result.failures.isEmpty { throw ExitCode(1) }
            } catch let exit as ExitCode {
                throw exit
            } catch {
                printError("error: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Sync: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget indexed files that no longer exist.")
        @OptionGroup var indexOption: IndexOption

        func run() throws {
            do {
                let removed = try ImageIndex(url: indexOption.url).sync()
                for path in removed { print("removed \(path)") }
                printError("sync: \(removed.count) missing files removed")
            } catch {
                printError("error: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show what the index holds.")
        @OptionGroup var indexOption: IndexOption
        @Flag(name: .long, help: "Print JSON.")
        var json = false

        struct Report: Encodable {
            let index: String, images: Int, distinctContents: Int, embeddings: Int, backbone: String?, fileBytes: Int
        }

        func run() throws {
            do {
                guard FileManager.default.fileExists(atPath: indexOption.index) else {
                    throw ImageIndexError.empty(path: indexOption.index)
                }
                let index = try ImageIndex(url: indexOption.url, readOnly: true)
                let files = try index.files()
                let attributes = try? FileManager.default.attributesOfItem(atPath: indexOption.index)
                let size = (attributes?[.size] as? Int) ?? 0
                let report = Report(index: indexOption.index, images: files.count, distinctContents: Set(files.map(\.contentSHA256)).count,
                                    embeddings: try index.store.count(), backbone: try index.backbone()?.key, fileBytes: size)
                if json {
                    print(try jsonText(report))
                } else {
                    print("index:             \(report.index)")
                    print("images:            \(report.images) (\(report.distinctContents) distinct contents)")
                    print("embeddings stored: \(report.embeddings)")
                    print("backbone:          \(report.backbone ?? "none yet")")
                    print("file size:         \(report.fileBytes) bytes")
                }
            } catch {
                printError("error: \(error)")
                throw ExitCode(1)
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Export the vectors as .npy and the paths as JSON (for FAISS, pgvector, NumPy).",
            discussion: """
                Writes OUTPUT (float32 [N, D], L2-normalised rows, numpy.load) and OUTPUT.json \
                ({"backbone": ..., "paths": [...]}, row order). Existing files are not replaced \
                without --overwrite.
                """)
        @OptionGroup var indexOption: IndexOption
        @Option(name: [.short, .long], help: ArgumentHelp("Output .npy file.", valueName: "path"))
        var output: String
        @Flag(name: .long, help: "Replace existing output files.")
        var overwrite = false

        func run() throws {
            let sidecar = output + ".json"
            for path in [output, sidecar] where !overwrite && FileManager.default.fileExists(atPath: path) {
                printError("error: \(path) already exists; pass --overwrite to replace it")
                throw ExitCode(1)
            }
            do {
                let index = try ImageIndex(url: indexOption.url, readOnly: true)
                let (search, _) = try index.searchIndex(preprocessing: .standard)
                let rows = (0..<search.count).flatMap { search.vector(at: $0) }
                try AtomicFile.write(NPY.encode(Tensor(shape: [search.count, search.dimension], scalars: rows)), to: URL(fileURLWithPath: output))
                struct Sidecar: Encodable { let backbone: String?; let paths: [String] }
                try AtomicFile.write(Data(try jsonText(Sidecar(backbone: try index.backbone()?.key, paths: search.identifiers)).utf8),
                                     to: URL(fileURLWithPath: sidecar))
                printError("export: \(search.count) vectors of \(search.dimension) values to \(output) and \(sidecar)")
            } catch {
                printError("error: \(error)")
                throw ExitCode(1)
            }
        }
    }
}

/// `mobilenet similar QUERY... --index FILE`: nearest indexed images by cosine similarity.
struct Similar: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find the indexed images most similar to query images.",
        discussion: """
            Similarity is the cosine of the angle between embeddings: 1 for the same direction; \
            MobileNetV2 embeddings are non-negative, so scores lie in 0...1. Near-duplicates \
            (re-encodes, resizes, small crops) score about 0.9 and above; same-class photos \
            typically 0.5-0.8. The query is embedded with the index's backbone: give the same \
            --alpha, --input-size and --weights as when the index was built.
            """)

    @OptionGroup var indexOption: Index.IndexOption
    @OptionGroup var model: ModelOptions

    @OptionGroup var decode: DecodeOptions
    @Option(name: .long, help: "Matches per query.")
    var top: Int = 5
    @Option(name: .long, help: "Leave out matches below this cosine similarity.")
    var minSimilarity: Float?
    @Option(name: .long, help: "In-memory vector precision: float32 or float16 (half the memory).")
    var precision: String = "float32"
    @Flag(name: .long, help: "Print JSON.")
    var json = false
    @Argument(help: ArgumentHelp("Query image files.", valueName: "image"))
    var queries: [String]

    struct Result: Encodable { let query: String; let matches: [SimilarityMatch] }
    struct Failure: Encodable { let file: String; let error: String }
    struct Report: Encodable { let index: String; let results: [Result]; let errors: [Failure] }

    func validate() throws {
        guard top >= 1 else { throw ValidationError("--top must be at least 1") }
        guard VectorPrecision(rawValue: precision) != nil else { throw ValidationError("--precision must be float32 or float16") }
    }

    func run() async throws {
        var failures: [Failure] = []
        var results: [Result] = []
        do {
            guard FileManager.default.fileExists(atPath: indexOption.index) else { throw ImageIndexError.empty(path: indexOption.index) }
            let index = try ImageIndex(url: indexOption.url, readOnly: true)
            let backbone = try await Backbone.load(model: model)
            try index.checkCompatible(backbone.identity)
            let (search, _) = try index.searchIndex(preprocessing: .standard, precision: VectorPrecision(rawValue: precision) ?? .float32)
            let embedder = try CachedEmbedder(model: backbone.network, backbone: backbone.identity, store: nil, batchSize: model.batchSize, decodeThreads: decode.threads)
            let urls = queries.map { URL(fileURLWithPath: $0) }
            let embedded = try embedder.embed(urls)
            for failure in embedded.failures {
                failures.append(Failure(file: failure.url.relativePath, error: failure.message))
                printError("error: \(failure.message)")
            }
            for url in urls {
                guard let embedding = embedded.embeddings[url] else { continue }
                let matches = try search.search(embedding.vector, top: top, minimumSimilarity: minSimilarity)
                results.append(Result(query: url.relativePath, matches: matches))
                if !json {
                    print(url.relativePath)
                    for (rank, match) in matches.enumerated() {
                        print(String(format: "  %2d. %.4f  ", rank + 1, match.similarity) + match.identifier)
                    }
                    if matches.isEmpty { print("  (no match\(minSimilarity.map { " at or above \($0)" } ?? ""))") }
                }
            }
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
        if json { print(try jsonText(Report(index: indexOption.index, results: results, errors: failures))) }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

/// `mobilenet duplicates DIR...|--index FILE`: groups of near-duplicate images.
struct Duplicates: AsyncParsableCommand {
    /// Chosen from measurements on the near-duplicate benchmark (docs/similarity.md).
    static let defaultThreshold: Float = 0.88

    static let configuration = CommandConfiguration(
        abstract: "Group near-duplicate images (re-encodes, resizes, small crops of one photo).",
        discussion: """
            Two images are near-duplicates when the cosine similarity of their embeddings is at \
            least the threshold (default \(defaultThreshold), chosen from measurements, see \
            docs/similarity.md); groups are the connected components of that relation. Give \
            directories/files (embedded now; with --index FILE they are added to that index \
            first) or only --index FILE to group what the index holds.
            """)

    @Option(name: .long, help: ArgumentHelp("An index database to use (and add the given images to).", valueName: "path"))
    var index: String?
    @OptionGroup var model: ModelOptions

    @OptionGroup var decode: DecodeOptions
    @Option(name: .long, help: "Cosine similarity threshold, 0...1.")
    var threshold: Float = Duplicates.defaultThreshold
    @Flag(name: .long, help: "Print JSON.")
    var json = false
    @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
    var recursive = false
    @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
    var images: [String] = []

    struct Member: Encodable { let file: String; let similarityToFirst: Float }
    struct Report: Encodable { let threshold: Float; let images: Int; let groups: [[Member]] }

    func validate() throws {
        guard index != nil || !images.isEmpty else { throw ValidationError("give directories or files, or --index FILE") }
        guard (-1...1).contains(threshold) else { throw ValidationError("--threshold must be in -1...1") }
    }

    func run() async throws {
        var failed = false
        let search: EmbeddingIndex
        do {
            if let indexPath = index {
                let imageIndex = try ImageIndex(url: URL(fileURLWithPath: indexPath), readOnly: images.isEmpty)
                if !images.isEmpty {
                    let (files, missing) = collectImageFiles(images, recursive: recursive)
                    for message in missing { printError("error: \(message)") }
                    failed = !missing.isEmpty
                    let backbone = try await Backbone.load(model: model)
                    try imageIndex.checkCompatible(backbone.identity)
                    let embedder = try CachedEmbedder(model: backbone.network, backbone: backbone.identity, store: imageIndex.store, batchSize: model.batchSize, decodeThreads: decode.threads)
                    failed = try !embedWithProgress(embedder, files: files.map(\.standardizedFileURL), label: "duplicates").failures.isEmpty || failed
                }
                search = try imageIndex.searchIndex(preprocessing: .standard).index
            } else {
                let (files, missing) = collectImageFiles(images, recursive: recursive)
                for message in missing { printError("error: \(message)") }
                failed = !missing.isEmpty
                let backbone = try await Backbone.load(model: model)
                let embedder = try CachedEmbedder(model: backbone.network, backbone: backbone.identity, store: nil, batchSize: model.batchSize, decodeThreads: decode.threads)
                let result = try embedWithProgress(embedder, files: files, label: "duplicates")
                failed = failed || !result.failures.isEmpty
                let kept = files.filter { result.embeddings[$0] != nil }
                guard let first = kept.first, let dimension = result.embeddings[first]?.vector.count else {
                    throw ImageIndexError.empty(path: images.joined(separator: " "))
                }
                search = try EmbeddingIndex(identifiers: kept.map(\.relativePath),
                                            vectors: kept.flatMap { result.embeddings[$0]?.vector ?? [] }, dimension: dimension)
            }
        } catch {
            printError("error: \(error)")
            throw ExitCode(1)
        }
        let groups = search.nearDuplicateGroups(threshold: threshold).map { rows -> [Member] in
            let first = search.vector(at: rows[0])
            return rows.map { row in
                let v = search.vector(at: row)
                return Member(file: search.identifiers[row], similarityToFirst: zip(first, v).reduce(0) { $0 + $1.0 * $1.1 })
            }
        }
        if json {
            print(try jsonText(Report(threshold: threshold, images: search.count, groups: groups)))
        } else {
            for (number, group) in groups.enumerated() {
                print("group \(number + 1) (\(group.count) images)")
                for member in group { print(String(format: "  %.4f  ", member.similarityToFirst) + member.file) }
            }
            printError("duplicates: \(groups.count) groups among \(search.count) images (threshold \(threshold))")
        }
        if failed { throw ExitCode(1) }
    }
}
