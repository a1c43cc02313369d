// TFLiteParity: our outputs on MobileNetV2 .tflite files against LiteRT's, per file, on the
// shared reference photos. The files and LiteRT's outputs come from
// `scripts/fixtures/make_tflite_models.py --shared` (the shared ImageNet weights converted by
// TensorFlow: float32, float16 weights, dynamic range, full-integer with uint8 and int8 I/O;
// not committed) in .build/tflite-models/:
//
//   .venv/bin/python scripts/fixtures/make_tflite_models.py --shared
//   swift run -c release TFLiteParity [.build/tflite-models] [../shared]
//
// Quantized files run on the integer kernels (their inputs quantized as the script fed LiteRT:
// round(x / scale) + zero point); the others on oneDNN. Printed per file: top-1 agreement with
// LiteRT (built-in kernels) and, for quantized outputs, the share of entries equal to LiteRT's
// built-in kernels and within 1 of LiteRT with XNNPACK; for float outputs, max |difference|.
import Foundation
import MobileNet

struct Outputs: Decodable {
    var builtin: [[Double]]
    var xnnpack: [[Double]]
}

let arguments = CommandLine.arguments
let folder = URL(fileURLWithPath: arguments.count > 1 ? arguments[1] : ".build/tflite-models")
let shared = URL(fileURLWithPath: arguments.count > 2 ? arguments[2] : (ProcessInfo.processInfo.environment["MOBILENET_SHARED_DIR"] ?? "../shared"))
let json = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("litert-outputs.json"))) as! [String: Any]
let photos = json["photos"] as! [String]
let inputs = try photos.map { try NPY.read(contentsOf: shared.appendingPathComponent("data/reference/\($0).input.npy")).scalars }
let keras = (json["keras"] as! [[Double]])
func argmax(_ row: [Double]) -> Int { row.indices.max { row[$0] < row[$1] || (row[$0] == row[$1] && $0 > $1) }! }

print("| file | kind | top-1 = LiteRT | top-1 = Keras | outputs equal to LiteRT built-in | within 1 of LiteRT XNNPACK | max abs diff (float) |")
print("|---|---|---|---|---|---|---|")
for name in ["float32", "float16", "dynamic-range", "int8-uint8io", "int8-int8io"] {
    guard let raw = json[name] as? [String: Any] else { continue }
    let litert = try JSONDecoder().decode(Outputs.self, from: JSONSerialization.data(withJSONObject: raw))
    let url = folder.appendingPathComponent("mobilenet_v2_1.0_224_\(name).tflite")
    let file = try TFLiteModel(contentsOf: url)
    let recognised = try TFLiteMobileNetV2(model: file)
    var sameTop = 0, sameKeras = 0, equal = 0, withinOne = 0, total = 0
    var worst = 0.0
    if recognised.quantizationKind == .fullInteger {
        let program = try QuantizedProgram(model: file)
        let input = file.tensors[file.inputs[0]]
        let (scale, zero) = (input.quantization!.scales[0], Int32(input.quantization!.zeroPoints[0]))
        let range: ClosedRange<Int32> = input.type == .uint8 ? 0...255 : -128...127
        for (i, x) in inputs.enumerated() {
            let q = x.map { min(max(Int32(($0 / scale).rounded(.toNearestOrAwayFromZero)) + zero, range.lowerBound), range.upperBound) }
            let ours = try program.run(.quantized(q), keep: [file.outputs[0]]).quantized[file.outputs[0]]!.map(Double.init)
            for (j, v) in ours.enumerated() {
                total += 1
                if v == litert.builtin[i][j] { equal += 1 }
                if abs(v - litert.xnnpack[i][j]) <= 1 { withinOne += 1 }
            }
            if argmax(ours) == argmax(litert.builtin[i]) { sameTop += 1 }
            if argmax(ours) == argmax(keras[i]) { sameKeras += 1 }
        }
    } else {
        let model = try await ModelFile.open(url, backend: OneDNNBackend())
        for (i, x) in inputs.enumerated() {
            let p = try model.run(Tensor(shape: [1, 224, 224, 3], scalars: x)).probabilities![0].map(Double.init)
            worst = max(worst, zip(p, litert.builtin[i]).map { abs($0 - $1) }.max()!)
            if argmax(p) == argmax(litert.builtin[i]) { sameTop += 1 }
            if argmax(p) == argmax(keras[i]) { sameKeras += 1 }
        }
    }
    let share = { (n: Int) in total == 0 ? "-" : String(format: "%d/%d (%.2f%%)", n, total, 100 * Double(n) / Double(total)) }
    print("| \(url.lastPathComponent) | \(recognised.quantizationKind.rawValue) | \(sameTop)/\(inputs.count) | \(sameKeras)/\(inputs.count) | \(share(equal)) | \(share(withinOne)) | \(total == 0 ? String(format: "%.2e", worst) : "-") |")
}
