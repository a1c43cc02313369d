import Foundation
import MobileNet
import MobileNetTestSupport
import Testing
import MobileNetIO

/// `.keras` archives from the internet: damaged members, members that inflate without bound,
/// and configs that disagree with the weights are refused with the file's name.
@Suite("Hostile .keras archives: CRC, inflate limit, config honoured")
struct KerasArchiveSafetyTests {
    static let fixture = TestData.fixtures.appendingPathComponent("keras-transfer/transfer_a035_96.keras")

    /// A copy of the fixture with members replaced (`nil` removes one).
    static func rewritten(_ replace: [String: Data?], in directory: URL, name: String) throws -> URL {
        let source = try ZipArchive(contentsOf: fixture)
        let url = directory.appendingPathComponent(name)
        var members: [(name: String, content: ZipArchive.Content, deflate: Bool)] = []
        for member in source.members {
            var data = try #require(try source.read(member.name, limit: 1 << 28))
            if let replacement = replace[member.name] {
                guard let replacement else { continue }
                data = replacement
            }
            members.append((member.name, .data(data), true))
        }
        try ZipArchive.write(members, to: url, modificationDate: Date())
        return url
    }

    static func config() throws -> [String: Any] {
        let data = try #require(try KerasArchive.member("config.json", of: fixture, limit: 1 << 24))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    /// The config with every Dense layer's config changed by `change`.
    static func changingDense(_ change: @escaping (inout [String: Any]) -> Void) throws -> Data {
        func visit(_ value: Any) -> Any {
            if var dict = value as? [String: Any] {
                if dict["class_name"] as? String == "Dense", var config = dict["config"] as? [String: Any] {
                    change(&config)
                    dict["config"] = config
                    return dict
                }
                for (key, item) in dict { dict[key] = visit(item) }
                return dict
            }
            if let array = value as? [Any] { return array.map(visit) }
            return value
        }
        return try JSONSerialization.data(withJSONObject: visit(try config()))
    }

    @Test("bytes overwritten inside model.weights.h5 are caught by the CRC-32, naming the file")
    func damagedMember() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes = try Data(contentsOf: Self.fixture)
        // The weights member is stored (not deflated): overwrite 4 KB in its middle.
        let range = (bytes.count / 2)..<(bytes.count / 2 + 4096)
        bytes.replaceSubrange(range, with: Data(repeating: 0, count: range.count))
        let damaged = dir.appendingPathComponent("damaged.keras")
        try bytes.write(to: damaged)
        do {
            _ = try KerasWeightFile.read(contentsOf: damaged)
            Issue.record("a damaged archive was accepted")
        } catch {
            #expect(error.description.hasPrefix(damaged.path) && error.description.contains("CRC-32"), "\(error)")
        }
    }

    @Test("a member declaring more than the limit is refused before it is inflated")
    func inflateLimit() throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("bomb.keras")
        // 256 MiB + 1 of zeros (a sparse file), deflated to a few hundred kilobytes.
        let zeros = dir.appendingPathComponent("zeros")
        #expect(FileManager.default.createFile(atPath: zeros.path, contents: nil) && truncate(zeros.path, off_t(KerasArchive.maximumWeightsBytes + 1)) == 0)
        try ZipArchive.write([("model.weights.h5", .file(zeros), true)], to: url, modificationDate: Date())
        #expect(try ZipArchive(contentsOf: url).member(named: "model.weights.h5")?.size == UInt64(KerasArchive.maximumWeightsBytes + 1))
        let start = Date()
        do {
            _ = try KerasWeightFile.read(contentsOf: url)
            Issue.record("a 256 MiB + 1 member was accepted")
        } catch {
            #expect(error.description.contains("more than the 256 MiB"), "\(error)")
        }
        #expect(Date().timeIntervalSince(start) < 5)
        // The streaming limit itself: a small limit stops a real member as it inflates.
        #expect(throws: WeightFileError.self) { _ = try KerasArchive.member("model.weights.h5", of: Self.fixture, limit: 1000) }
    }

    @Test("config.json is honoured: another activation or unit count, or a garbage config, is refused")
    func configHonoured() async throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // The fixture itself is accepted.
        #expect(try KerasTransferModel.read(contentsOf: Self.fixture).head.classes == 5)
        let relu = try Self.rewritten(["config.json": try Self.changingDense { $0["activation"] = "relu" }], in: dir, name: "relu.keras")
        #expect(throws: KerasImportError.unsupportedHead(path: relu.path, message: "layer 'dense' has activation 'relu'; this classifier supports softmax there")) {
            try KerasTransferModel.read(contentsOf: relu)
        }
        let units = try Self.rewritten(["config.json": try Self.changingDense { $0["units"] = 7 }], in: dir, name: "units.keras")
        #expect(throws: KerasImportError.invalidConfig(path: units.path, message: "layer 'dense' declares 7 units, its weights have 5 outputs")) {
            try KerasTransferModel.read(contentsOf: units)
        }
        let garbage = try Self.rewritten(["config.json": Data("{not json".utf8)], in: dir, name: "garbage.keras")
        #expect(throws: KerasImportError.invalidConfig(path: garbage.path, message: "the model config (config.json or the model_config attribute) is not JSON")) {
            try KerasTransferModel.read(contentsOf: garbage)
        }
        // Max pooling instead of average pooling would be run as something else: refused.
        var text = String(decoding: try #require(try KerasArchive.member("config.json", of: Self.fixture, limit: 1 << 24)), as: UTF8.self)
        #expect(text.contains("GlobalAveragePooling2D"))
        text = text.replacingOccurrences(of: "GlobalAveragePooling2D", with: "GlobalMaxPooling2D")
        let maxPooled = try Self.rewritten(["config.json": Data(text.utf8)], in: dir, name: "max.keras")
        #expect(throws: KerasImportError.self) { try KerasTransferModel.read(contentsOf: maxPooled) }
        // An input the machine cannot run, declared by the file: refused naming the file.
        let huge = text.replacingOccurrences(of: "GlobalMaxPooling2D", with: "GlobalAveragePooling2D")
            .replacingOccurrences(of: "\"batch_shape\": [null, 96, 96, 3]", with: "\"batch_shape\": [null, 100000, 100000, 3]")
        let hugeInput = try Self.rewritten(["config.json": Data(huge.utf8)], in: dir, name: "huge.keras")
        do {
            _ = try await ModelFile.open(hugeInput, backend: ReferenceBackend())
            Issue.record("a 100000x100000 input was accepted")
        } catch {
            #expect("\(error)".hasPrefix(hugeInput.path) && "\(error)".contains("4096"), "\(error)")
        }
        let removed: [String: Data?] = ["config.json": Data?.none]
        let missing = try Self.rewritten(removed, in: dir, name: "missing.keras")
        #expect(throws: WeightFileError.corruptArchive(path: missing.path, reason: "it has no config.json member")) { try KerasTransferModel.read(contentsOf: missing) }
    }
}

@Suite("Damaged deflate streams in .keras archives")
struct KerasArchiveDeflateTests {
    @Test("a member whose deflate stream ends early is a damaged-archive error at once (ZIPFoundation looped on it until the 10 s limit)")
    func truncatedDeflateStream() throws {
        // Found by the keras-archive fuzz target: config.json is deflated, and its stream stops
        // before its end marker; the archive's first member also declares 1.3 GB of data
        // (libzip's consistency checks refuse the archive when it is opened).
        let url = TestData.fixtures.appendingPathComponent("fuzz-corpus/keras-archive/3db7ada2dd489d4a9dd643c57558e86526d3433a")
        do {
            _ = try KerasArchive.member("config.json", of: url, limit: 1 << 20)
            Issue.record("a truncated deflate stream was accepted")
        } catch {
            guard case .corruptArchive(let path, let reason) = error else {
                Issue.record("expected a damaged-archive error, got \(error)")
                return
            }
            #expect(path == url.path && reason.contains("ZIP archive"), "\(reason)")
        }
    }
}
