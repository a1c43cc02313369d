import ArgumentParser
import MobileNet

/// `mobilenet summary`: the Keras-style layer table.
struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the layers, output shapes and parameter counts, as Keras model.summary() does."
    )

    @Option(name: .long, help: "Width multiplier.")
    var alpha: Double = 1.0

    @Option(name: .long, help: ArgumentHelp("Input size: N for NxN, or HxW.", valueName: "size"))
    var inputSize: String = "224"

    @Flag(name: .long, help: "Without the classifier (include_top=False).")
    var noTop = false

    @Option(name: .long, help: "Global pooling without the top: avg or max.")
    var pooling: String?

    @Option(name: .long, help: "Number of classes of the classifier.")
    var classes: Int = 1000

    func run() throws {
        let parts = inputSize.lowercased().split(separator: "x").compactMap { Int($0) }
        guard parts.count == 1 || parts.count == 2 else { throw ValidationError("--input-size must be N or HxW") }
        if let pooling, Pooling(rawValue: pooling) == nil { throw ValidationError("--pooling must be avg or max") }
        let configuration = MobileNetV2Configuration(
            alpha: alpha, inputHeight: parts[0], inputWidth: parts.last ?? parts[0], includeTop: !noTop,
            pooling: pooling.flatMap(Pooling.init(rawValue:)), classes: classes)
        do {
            let layers = try MobileNetV2Architecture.layers(for: configuration)
            print(ModelSummary(modelName: configuration.kerasModelName, layers: layers))
        } catch {
            throw ValidationError(error.description)
        }
    }
}
