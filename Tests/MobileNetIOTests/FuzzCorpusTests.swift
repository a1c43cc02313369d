import Foundation
import MobileNet
import MobileNetFuzzTargets
@_spi(Fuzzing) import MobileNetServing
import MobileNetTestSupport
import Testing

/// The committed libFuzzer corpus (`Tests/Fixtures/fuzz-corpus/<target>/`: seeds from
/// `scripts/fixtures/make_fuzz_seeds.py` and inputs kept by `make fuzz`) replayed through the
/// same targets the fuzzer runs: none may crash.
@Suite("libFuzzer corpus replay")
struct FuzzCorpusTests {
    static let root = TestData.fixtures.appendingPathComponent("fuzz-corpus")

    static func inputs(_ target: FuzzTarget) throws -> [Data] {
        let directory = root.appendingPathComponent(target.rawValue)
        return try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted().compactMap {
            FileManager.default.contents(atPath: directory.appendingPathComponent($0).path)
        }
    }

    @Test("every corpus input of every target runs without a crash", arguments: FuzzTarget.allCases)
    func replay(target: FuzzTarget) throws {
        let inputs = try Self.inputs(target)
        #expect(!inputs.isEmpty, "no corpus for \(target.rawValue)")
        for data in inputs { target.run(data) }
        print("fuzz corpus \(target.rawValue): \(inputs.count) inputs")
    }

    @Test("the README's and the Makefile's lists of fuzz targets are FuzzTarget.allCases")
    func targetListsAreCurrent() throws {
        let names = FuzzTarget.allCases.map(\.rawValue)
        let readme = try String(contentsOf: TestData.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        #expect(readme.contains("make fuzz TARGET=" + names.joined(separator: "|") + " "), "README.md: make fuzz TARGET=\(names.joined(separator: "|"))")
        let makefile = try String(contentsOf: TestData.repositoryRoot.appendingPathComponent("Makefile"), encoding: .utf8)
        #expect(makefile.contains("(targets: " + names.joined(separator: ", ") + ")"), "Makefile: (targets: \(names.joined(separator: ", ")))")
    }

    @Test("the seeds reach deep: they are valid inputs of each parser")
    func seedsAreValid() throws {
        let seeds = Self.root
        // scripts/fixtures/make_fuzz_seeds.py: each request seed is taken by exactly one decoder;
        // the census refuses the last two.
        for file in try FileManager.default.contentsOfDirectory(atPath: seeds.appendingPathComponent("request").path) {
            let body = try Data(contentsOf: seeds.appendingPathComponent("request/\(file)"))
            let expected = file.hasPrefix("refused-") ? 0 : file.hasPrefix("predict-") || file.hasPrefix("infer-") ? 1 : nil
            if let expected { #expect(RequestDecodingFuzz.run(body) == expected, "\(file)") }
        }
        let model = try ClassifierModel.read(contentsOf: seeds.appendingPathComponent("model-file/small.json"))
        #expect(model.classNames == ["a", "b"])
        #expect(try KerasArchive.member("config.json", of: seeds.appendingPathComponent("keras-archive/deflated.keras"), limit: 1 << 20) != nil)
        let store = try EmbeddingStore(url: seeds.appendingPathComponent("store/small.db"), readOnly: true)
        #expect(try store.count() == 1)
        #expect(KerasWeightFile.decodePayloadForFuzzing(try Data(contentsOf: seeds.appendingPathComponent("weight-payload/ok.bin"))) == true)
        #expect(KerasWeightFile.decodePayloadForFuzzing(try Data(contentsOf: seeds.appendingPathComponent("weight-payload/error.bin"))) == false)
        // scripts/fixtures/make_tflite_seeds.py: TensorFlow's conversions of one tiny model.
        for mode in ["float32", "float16", "dynamic-range", "int8"] {
            let model = try TFLiteModel(contentsOf: seeds.appendingPathComponent("tflite/tiny-\(mode).tflite"))
            #expect(model.tensors[model.outputs[0]].shape == [1, 3])
        }
        let int8 = try TFLiteModel(contentsOf: seeds.appendingPathComponent("tflite/tiny-int8.tflite"))
        _ = try QuantizedProgram(model: int8) // QUANTIZE uint8 → int8, per-channel weights, MEAN, FULLY_CONNECTED, SOFTMAX
    }
}
