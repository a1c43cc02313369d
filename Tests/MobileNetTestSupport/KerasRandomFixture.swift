import Foundation
import MobileNet
import Testing

/// One random-weight golden fixture of `Tests/Fixtures/keras-random`, written by
/// `scripts/fixtures/make_keras_fixtures.py` with Keras 3.15.1: the configuration, the formula
/// seed, Keras's output file and Keras's layer summary.
public struct KerasRandomFixture: Decodable, CustomTestStringConvertible, Sendable {
    public let name: String
    public let file: String
    public let seed: Int
    public let alpha: Double
    public let input_shape: [Int]
    public let batch: Int
    public let include_top: Bool
    public let pooling: String?
    public let classes: Int
    public let classifier_activation: String?
    public let output_shape: [Int]
    public let count_params: Int
    public let model_name: String
    public let layers: [Layer]

    /// One row of Keras's layer list: name, class, output shape, parameter count.
    public struct Layer: Decodable, Sendable {
        public let name: String, type: String, outputShape: [Int], parameters: Int
        public init(from decoder: any Decoder) throws {
            var c = try decoder.unkeyedContainer()
            name = try c.decode(String.self)
            type = try c.decode(String.self)
            outputShape = try c.decode([Int].self)
            parameters = try c.decode(Int.self)
        }
    }

    /// The MobileNetV2 configuration of the fixture.
    public var configuration: MobileNetV2Configuration {
        MobileNetV2Configuration(
            alpha: alpha, inputHeight: input_shape[0], inputWidth: input_shape[1], includeTop: include_top,
            pooling: pooling.flatMap(Pooling.init(rawValue:)), classes: classes,
            classifierActivation: classifier_activation == "softmax" ? .softmax : .none)
    }

    public var testDescription: String { name }

    /// Keras's output tensor for the fixture's formula input.
    public func expectedOutput() throws -> Tensor {
        try NPY.read(contentsOf: TestData.fixtures.appendingPathComponent("keras-random/\(file)"))
    }

    /// Every fixture of the manifest (empty when it cannot be read; a test checks the count).
    public static let all: [KerasRandomFixture] = {
        struct Manifest: Decodable { let fixtures: [KerasRandomFixture] }
        let url = TestData.fixtures.appendingPathComponent("keras-random/manifest.json")
        guard let data = try? Data(contentsOf: url), let manifest = try? JSONDecoder().decode(Manifest.self, from: data) else { return [] }
        return manifest.fixtures
    }()
}
