// `mobilenet-fuzz TARGET [FILE|DIR]...`: runs a fuzzing target (see MobileNetFuzzTargets).
//
// Normal builds replay files (a corpus, a crasher) through the target and report how many ran.
// Built with `-sanitize=fuzzer,address -DFUZZING` (`make fuzz`), the same binary is a libFuzzer
// driver: `mobilenet-fuzz TARGET [libFuzzer options] CORPUS_DIR`.
import Foundation
import MobileNetFuzzTargets

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
                         _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> Int32) -> Int32

nonisolated(unsafe) var selectedTarget: FuzzTarget = .image
#endif

@main
struct FuzzMain {
    static func main() {
        var arguments = CommandLine.arguments
        // libFuzzer re-runs this binary without the target name for -merge=1 and -fork=N: the
        // target then comes from the environment, set here on the first run.
        if arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[1]) {
            setenv("MOBILENET_FUZZ_TARGET", target.rawValue, 1)
        } else if let name = ProcessInfo.processInfo.environment["MOBILENET_FUZZ_TARGET"], FuzzTarget(rawValue: name) != nil {
            arguments.insert(name, at: 1)
        }
        guard arguments.count >= 2, let target = FuzzTarget(rawValue: arguments[1]) else {
            FileHandle.standardError.write(Data("usage: mobilenet-fuzz \(FuzzTarget.allCases.map(\.rawValue).joined(separator: "|")) [FILE|DIR]...\n".utf8))
            exit(64)
        }
        #if FUZZING
        selectedTarget = target
        // libFuzzer sees argv without the target name.
        var argv: [UnsafeMutablePointer<CChar>?] = [strdup(arguments[0])] + arguments.dropFirst(2).map { strdup($0) } + [nil]
        var argc = Int32(argv.count - 1)
        argv.withUnsafeMutableBufferPointer { buffer in
            var pointer = buffer.baseAddress
            exit(LLVMFuzzerRunDriver(&argc, &pointer) { data, size in
                selectedTarget.run(data.map { Data(bytes: $0, count: size) } ?? Data())
                return 0
            })
        }
        #else
        var count = 0
        for path in arguments.dropFirst(2) {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else { continue }
            let files = isDirectory.boolValue
                ? ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? []).sorted().map { path + "/" + $0 }
                : [path]
            for file in files {
                guard let data = FileManager.default.contents(atPath: file) else { continue }
                target.run(data)
                count += 1
            }
        }
        print("\(target.rawValue): \(count) inputs replayed without a crash")
        #endif
    }
}
