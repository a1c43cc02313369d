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
        subcommands: [Add.self, Merge.self, Sync.self, Stats.self, Export.self, BuildANN.self, BenchANN.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Embed new or changed images of files and directories into the index.",
            discussion: """
                Each batch is committed as it is done, so a run that stops (killed, out of time) \
                resumes where it was: the re-run embeds only what the index does not hold yet. \
                With --shard I/N (and --files-from), the index file is the shard's output: \
                INDEX.manifest.json records the shard, backbone, preprocessing and the files with \
                their SHA-256; join the shards with `mobilenet index merge`.
                """)

        @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
        func validate() throws { _ = try database.indexPath() }
        @OptionGroup(title: "Model") var model: ModelOptions
        @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup
        @OptionGroup var decode: DecodeOptions
        @OptionGroup(title: "Image preprocessing") var image: ImageOptions
        @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
        var recursive = false
        @OptionGroup(title: "File list and shard") var list: FileListOptions
        @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
        var images: [String] = []

        func run() async throws {
            try checkUsage {
                if list.filesFrom != nil, !images.isEmpty { throw ValidationError("give either image arguments or --files-from, not both") }
                if list.filesFrom == nil, images.isEmpty { throw ValidationError("give at least one image file or directory (or --files-from FILE)") }
            }
            let (files, missing) = try list.collect(images, recursive: recursive)
            if !(files.isEmpty && list.shard != nil && missing.isEmpty) {
                try requireImages(files, images.isEmpty ? [list.filesFrom ?? ""] : images, problems: missing)
            }
            do {
                let path = try database.indexPath()
                let options = runtime.runtime(decode)
                let backbone = try await model.loadBackbone(runtime: options, preprocessing: image.modelPreprocessing)
                let index = try ImageIndex(path: path)
                let c = backbone.network.configuration
                let progress = ProgressReporter()
                let result = try index.add(files.map(\.standardizedFileURL), backbone: backbone,
                                           preprocessor: image.preprocessor(height: c.inputHeight, width: c.inputWidth), runtime: options, progress: progress.update)
                progress.finish()
                for failure in result.failures { printError("error: \(failure.message) (skipped)") }
                if list.shard != nil {
                    let entries = files.compactMap { url -> ShardManifest.File? in
                        result.embeddings[url.standardizedFileURL].map { ShardManifest.File(path: url.standardizedFileURL.path, sha256: $0.contentSHA256) }
                    }
                    let manifest = ShardManifest(shard: list.selectedShard, source: list.source(images), backbone: backbone.identity,
                                                 preprocessing: PreprocessingIdentity(image.preprocessor(height: c.inputHeight, width: c.inputWidth)),
                                                 files: entries, failures: result.failures.map { ShardManifest.Failure(path: $0.url.path, error: $0.message) },
                                                 outputs: [])
                    let url = try manifest.write(besides: URL(fileURLWithPath: path))
                    printError("shard \(list.selectedShard): manifest \(url.relativePath)")
                }
                printError("index: \(result.embeddings.count) images embedded (\(result.cached) from the index, \(result.computed) computed); \(try index.files().count) images in \(path)")
                if !missing.isEmpty || !result.failures.isEmpty { throw ExitCode(1) }
            }
        }
    }

    struct Merge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Join shard indexes (index add --shard) into one index.",
            discussion: """
                Copies every file record and embedding of the SHARD databases into --index \
                (created when missing). Refuses, before writing anything, shards made with \
                different backbones (alpha, input size, pooling, weights) or image preprocessing.
                """)
        @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
        @Argument(help: ArgumentHelp("Shard index files.", valueName: "shard"))
        var shards: [String]

        func validate() throws {
            _ = try database.indexPath()
            guard !shards.isEmpty else { throw ValidationError("give the shard index files to merge") }
        }

        func run() throws {
            do {
                let path = try database.indexPath()
                for shard in shards where !FileManager.default.fileExists(atPath: shard) {
                    printError("error: \(shard): no such file")
                    throw ExitCode(1)
                }
                let result = try ImageIndex.merge(shards.map { URL(fileURLWithPath: $0) }, into: URL(fileURLWithPath: path))
                printError("merge: \(result.files) files and \(result.embeddings) embeddings from \(counted(shards.count, "shard")) into \(path)")
            }
        }
    }

    struct Sync: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Forget indexed files that no longer exist.")
        @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
        func validate() throws { _ = try database.indexPath() }

        func run() throws {
            do {
                let removed = try ImageIndex(path: try database.indexPath()).sync()
                for path in removed { print("removed \(displayed(path))") }
                printError("sync: \(removed.count) missing files removed")
            }
        }
    }

    struct Stats: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show what the index holds.")
        @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
        func validate() throws { _ = try database.indexPath() }
        @Flag(name: .long, help: "Print JSON.")
        var json = false

        struct Report: Encodable {
            let index: String, images: Int, distinctContents: Int, embeddings: Int, backbone: String?, fileBytes: Int
        }

        func run() throws {
            do {
                let path = try database.indexPath()
                let index = try ImageIndex(path: path, readOnly: true)
                let files = try index.files()
                let attributes = try? FileManager.default.attributesOfItem(atPath: path)
                let size = (attributes?[.size] as? Int) ?? 0
                let report = Report(index: path, images: files.count, distinctContents: Set(files.map(\.contentSHA256)).count,
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
        @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
        @OptionGroup(title: "Image preprocessing (the one the index was built with)") var image: ImageOptions
        @Option(name: [.short, .long], help: ArgumentHelp("Output .npy file.", valueName: "path"))
        var output: String
        @Flag(name: .long, help: "Replace existing output files.")
        var overwrite = false

        func validate() throws {
            _ = try database.indexPath()
            try validateOutputs([output, output + ".json"], overwrite: overwrite, needsSideFile: [output], inputs: database.database.map { [$0] } ?? [])
        }

        func run() throws {
            let sidecar = output + ".json"
            do {
                let index = try ImageIndex(path: try database.indexPath(), readOnly: true)
                guard let backbone = try index.backbone() else { throw ImageIndexError.empty(path: try database.indexPath()) }
                let preprocessing = PreprocessingIdentity(image.configuration(), height: backbone.inputHeight, width: backbone.inputWidth)
                let (search, _) = try index.searchIndex(preprocessing: preprocessing)
                let rows = (0..<search.count).flatMap { search.vector(at: $0) }
                struct Sidecar: Encodable { let backbone: String?; let paths: [String] }
                let matrix = NPY.encode(Tensor(shape: [search.count, search.dimension], scalars: rows))
                let names = Data(try jsonText(Sidecar(backbone: backbone.key, paths: search.identifiers)).utf8)
                try AtomicFile.writeGroup([(matrix, URL(fileURLWithPath: output)), (names, URL(fileURLWithPath: sidecar))], overwrite: overwrite)
                printError("export: \(search.count) vectors of \(search.dimension) values to \(output) and \(sidecar)")
            }
        }
    }
}

extension Index {
    /// `mobilenet index build-ann --index DB -o FILE.faiss`: a FAISS approximate-search index.
    struct BuildANN: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "build-ann",
            abstract: "Build a FAISS approximate-search index (.faiss) over the index's embeddings.",
            discussion: """
                The vectors are the index's L2-normalised embeddings with the inner-product metric, \
                so scores are the same cosine similarities as exact search; ids are the index's rows \
                in path order, so the file belongs to this index as it is now (rebuild after `index \
                add` or `sync`; `similar --ann` refuses a file whose count or dimension differ). \
                Default factory: Flat (exact) below 10,000 images, else IVF<n>,Flat with n the power \
                of two nearest to the square root of the count, trained on 64 vectors per list. \
                Python's faiss.read_index opens the file.
                """)
        @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
        @OptionGroup(title: "Image preprocessing (the one the index was built with)") var image: ImageOptions
        @Option(name: [.short, .long], help: ArgumentHelp("Output .faiss file.", valueName: "path"))
        var output: String
        @Option(name: .long, help: "FAISS index_factory string: \"IVF1024,Flat\", \"HNSW32,Flat\", \"Flat\" (default: from the image count).")
        var factory: String?
        @Option(name: .long, help: "Stored default nprobe (IVF, 1...lists) or efSearch (HNSW, 1...1048576); Flat stores none.")
        var searchParameter: Int?
        @Flag(name: .long, help: "Replace an existing output file.")
        var overwrite = false

        func validate() throws {
            _ = try database.indexPath()
            try validateOutputs([output], overwrite: overwrite, needsSideFile: [], inputs: database.database.map { [$0] } ?? [])
            if let searchParameter, searchParameter < 1 { throw ValidationError("--search-parameter must be at least 1") }
        }

        func run() throws {
            do {
                let path = try database.indexPath()
                let index = try ImageIndex(path: path, readOnly: true)
                guard let backbone = try index.backbone() else { throw ImageIndexError.empty(path: path) }
                let preprocessing = PreprocessingIdentity(image.configuration(), height: backbone.inputHeight, width: backbone.inputWidth)
                let start = Date()
                let (ann, search) = try index.buildANN(preprocessing: preprocessing, factory: factory, searchParameter: searchParameter)
                try ann.write(to: URL(fileURLWithPath: output), overwrite: overwrite)
                let parameter = ann.defaultSearchParameter.map { ", \(ann.kind.description.hasPrefix("IVF") ? "nprobe" : "efSearch") \($0)" } ?? ""
                printError(String(format: "build-ann: %@ over %d vectors of %d values in %.1f s%@ to %@", ann.kind.description, search.count, search.dimension,
                                  Date().timeIntervalSince(start), parameter, output))
            } catch let error as ANNError {
                printError("error: \(errorMessage(error))")
                // A --factory FAISS cannot make or this module does not search, impossible sizes,
                // a --search-parameter the structure does not take: usage errors, as in validate().
                switch error {
                case .invalidArgument, .unsupported: throw ExitCode(64)
                case .faiss(let operation, _) where operation.hasPrefix("index_factory"): throw ExitCode(64)
                default: throw ExitCode(1)
                }
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

    @OptionGroup(title: "Embedding database") var database: EmbeddingDatabaseOptions
    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup
    @OptionGroup var decode: DecodeOptions
    @OptionGroup(title: "Image preprocessing (the one the index was built with)") var image: ImageOptions
    @Option(name: .long, help: "Matches per query.")
    var top: Int = 5
    @Option(name: .long, help: "Leave out matches below this cosine similarity (-1...1).")
    var minSimilarity: Float?
    @Option(name: .long, help: "In-memory vector precision: float32 or float16 (half the memory).")
    var precision: String = "float32"
    @Option(name: .long, help: ArgumentHelp("Search approximately with this FAISS index (from `index build-ann` or Python faiss.write_index, built from this index).", valueName: "path"))
    var ann: String?
    @Option(name: .long, help: "With --ann on an IVF index: cells scanned (default: stored in the file).")
    var nprobe: Int?
    @Option(name: .long, help: "With --ann on an HNSW index: candidate list size (default: stored in the file).")
    var efSearch: Int?
    @Flag(name: .long, help: "Print JSON.")
    var json = false
    @Argument(help: ArgumentHelp("Query image files or directories (their images).", valueName: "image"))
    var queries: [String]

    struct Result: Encodable { let query: String; let matches: [SimilarityMatch] }
    struct Failure: Encodable { let file: String; let error: String }
    struct Report: Encodable { let index: String; let results: [Result]; let errors: [Failure] }

    func validate() throws {
        _ = try database.indexPath()
        guard (1...1_000_000).contains(top) else { throw ValidationError("--top must be between 1 and 1000000, got \(top)") }
        guard VectorPrecision(rawValue: precision) != nil else { throw ValidationError("--precision must be float32 or float16") }
        // A cosine similarity; NaN would compare false and keep every match.
        if let minSimilarity, !(-1...1).contains(minSimilarity) {
            throw ValidationError("--min-similarity must be in -1...1 (a cosine similarity), got \(minSimilarity)")
        }
        if ann == nil, nprobe != nil || efSearch != nil { throw ValidationError("--nprobe and --ef-search need --ann") }
        if let nprobe, nprobe < 1 { throw ValidationError("--nprobe must be at least 1") }
        if let efSearch, efSearch < 1 { throw ValidationError("--ef-search must be at least 1") }
        if ann?.isEmpty == true { throw ValidationError("--ann: the path is empty") }
    }

    func run() async throws {
        var failures: [Failure] = []
        var results: [Result] = []
        let path: String
        do {
            path = try database.indexPath()
            let index = try ImageIndex(path: path, readOnly: true)
            let options = runtime.runtime(decode)
            let backbone = try await model.loadBackbone(runtime: options, preprocessing: image.modelPreprocessing)
            let c = backbone.network.configuration
            let (queryFiles, missing) = collectImageFiles(queries, recursive: false, offersRecursion: false)
            failures += missing.map { Failure(file: $0.path, error: $0.description) }
            try requireImages(queryFiles, queries, problems: missing)
            let preprocessor = image.preprocessor(height: c.inputHeight, width: c.inputWidth)
            let found = if let ann {
                try index.similar(to: queryFiles, top: top, minimumSimilarity: minSimilarity, annFile: URL(fileURLWithPath: ann),
                                  parameters: ANNSearchParameters(nprobe: nprobe, efSearch: efSearch), backbone: backbone,
                                  preprocessor: preprocessor, runtime: options)
            } else {
                try index.similar(to: queryFiles, top: top, minimumSimilarity: minSimilarity,
                                  precision: VectorPrecision(rawValue: precision) ?? .float32, backbone: backbone,
                                  preprocessor: preprocessor, runtime: options)
            }
            for failure in found.failures {
                failures.append(Failure(file: failure.url.relativePath, error: failure.message))
                printError("error: \(failure.message)")
            }
            for (url, matches) in found.results {
                results.append(Result(query: url.relativePath, matches: matches))
                if !json {
                    print(displayed(url.relativePath))
                    for (rank, match) in matches.enumerated() {
                        print(String(format: "  %2d. %.4f  ", rank + 1, match.similarity) + displayed(match.identifier))
                    }
                    if matches.isEmpty { print("  (no match\(minSimilarity.map { " at or above \($0)" } ?? ""))") }
                }
            }
        } catch let exit as ExitCode {
            throw exit
        } catch ANNError.invalidArgument(let message) {
            // --nprobe or --ef-search that the file's structure does not take: a usage error.
            printError("error: \(message)")
            throw ExitCode(64)
        }
        if json { print(try jsonText(Report(index: path, results: results, errors: failures))) }
        if !failures.isEmpty { throw ExitCode(1) }
    }
}

/// `mobilenet duplicates DIR...|--index FILE`: groups of near-duplicate images.
struct Duplicates: AsyncParsableCommand {

    static let configuration = CommandConfiguration(
        abstract: "Group near-duplicate images (re-encodes, resizes, small crops of one photo).",
        discussion: """
            Two images are near-duplicates when the cosine similarity of their embeddings is at \
            least the threshold (default \(NearDuplicates.defaultThreshold), chosen from measurements, see \
            docs/similarity.md); groups are the connected components of that relation. Give \
            directories/files (embedded now; with --index FILE they are added to that index \
            first) or only --index FILE to group what the index holds.
            """)

    @OptionGroup(title: "Embedding database (an index to use, and add the given images to)") var database: EmbeddingDatabaseOptions
    @OptionGroup(title: "Model") var model: ModelOptions
    @OptionGroup(title: "Runtime") var runtime: RuntimeOptionGroup
    @OptionGroup var decode: DecodeOptions
    @OptionGroup(title: "Image preprocessing") var image: ImageOptions
    @Option(name: .long, help: "Cosine similarity threshold, -1...1.")
    var threshold: Float = NearDuplicates.defaultThreshold
    @Flag(name: .long, help: "Print JSON.")
    var json = false
    @Flag(name: .long, help: "Descend into sub-directories of directory arguments.")
    var recursive = false
    @Argument(help: ArgumentHelp("Image files or directories.", valueName: "image"))
    var images: [String] = []

    struct Report: Encodable { let threshold: Float; let images: Int; let groups: [[DuplicateMember]] }

    func validate() throws {
        guard database.database != nil || !images.isEmpty else { throw ValidationError("give directories or files, or --index FILE") }
        if database.database != nil { _ = try database.indexPath() }
        guard (-1...1).contains(threshold) else { throw ValidationError("--threshold must be in -1...1") }
    }

    func run() async throws {
        var failed = false
        let search: EmbeddingIndex
        do {
            var files: [URL] = []
            if !images.isEmpty {
                let (found, missing) = collectImageFiles(images, recursive: recursive)
                failed = !missing.isEmpty
                try requireImages(found, images, problems: missing)
                files = found
            }
            let options = runtime.runtime(decode)
            let progress = ProgressReporter()
            defer { progress.finish() }
            if let indexPath = database.database {
                let imageIndex = try ImageIndex(path: indexPath, readOnly: images.isEmpty)
                var preprocessing: PreprocessingIdentity
                if !files.isEmpty {
                    let backbone = try await model.loadBackbone(runtime: options, preprocessing: image.modelPreprocessing)
                    let c = backbone.network.configuration
                    let preprocessor = image.preprocessor(height: c.inputHeight, width: c.inputWidth)
                    let result = try imageIndex.add(files.map(\.standardizedFileURL), backbone: backbone, preprocessor: preprocessor, runtime: options, progress: progress.update)
                    for failure in result.failures { printError("error: \(failure.message) (skipped)") }
                    failed = failed || !result.failures.isEmpty
                    preprocessing = PreprocessingIdentity(preprocessor)
                } else {
                    guard let backbone = try imageIndex.backbone() else { throw ImageIndexError.empty(path: indexPath) }
                    preprocessing = PreprocessingIdentity(image.configuration(), height: backbone.inputHeight, width: backbone.inputWidth)
                }
                search = try imageIndex.searchIndex(preprocessing: preprocessing).index
            } else {
                let backbone = try await model.loadBackbone(runtime: options, preprocessing: image.modelPreprocessing)
                let c = backbone.network.configuration
                let embedded = try NearDuplicates.embed(files, backbone: backbone, preprocessor: image.preprocessor(height: c.inputHeight, width: c.inputWidth),
                                                        runtime: options, progress: progress.update)
                for failure in embedded.failures { printError("error: \(failure.message) (skipped)") }
                failed = failed || !embedded.failures.isEmpty
                search = embedded.index
            }
        }
        let groups = NearDuplicates.groups(in: search, threshold: threshold)
        if json {
            print(try jsonText(Report(threshold: threshold, images: search.count, groups: groups)))
        } else {
            for (number, group) in groups.enumerated() {
                print("group \(number + 1) (\(group.count) images)")
                for member in group { print(String(format: "  %.4f  ", member.similarityToFirst) + displayed(member.file)) }
            }
            printError("duplicates: \(counted(groups.count, "group")) among \(counted(search.count, "image")) (threshold \(threshold))")
        }
        if failed { throw ExitCode(1) }
    }
}
