import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

/// OpenBLAS's pthreads build shuts its thread pool down in a fork handler, which deadlocks with a
/// concurrent fork (OpenBLAS #2270) and strands a BLAS call running on another thread (a test
/// run hung that way: one thread spinning in `exec_blas`). Every fork of the package waits for
/// the package's BLAS calls (`mn_fork`, `mn_blas_enter`): isolated file reads, which fork, run
/// here beside multi-threaded sgemm calls from training kernels and exact search.
@Suite("Forks beside BLAS calls")
struct ForkSafetyTests {
    @Test("isolated .faiss reads (forks) concurrent with sgemm and sgemv calls all finish", .timeLimit(.minutes(2)))
    func forksBesideBLAS() async throws {
        let dir = try TestData.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let exact = try ANNIndexTests.embeddingIndex(count: 600, dimension: 16)
        let file = dir.appendingPathComponent("small.faiss")
        try ANNIndex.build(from: exact, factory: "IVF8,Flat").write(to: file, overwrite: false)
        let n = 192
        let a = (0..<(n * n)).map { Float($0 % 7) - 3 }
        let expected: [Float] = {
            var y = [Float](repeating: 0, count: n * n)
            a.withUnsafeBufferPointer { p in y.withUnsafeMutableBufferPointer { GradientKernels.pointwise(p.baseAddress!, rows: n, inputChannels: n, kernel: p.baseAddress!, outputChannels: n, into: $0.baseAddress!) } }
            return y
        }()
        try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<3 {
                group.addTask {
                    for _ in 0..<6 { _ = try ANNIndex(contentsOf: file) }  // each read forks a checking child
                    return true
                }
                group.addTask {
                    var y = [Float](repeating: 0, count: n * n)
                    for _ in 0..<60 {
                        a.withUnsafeBufferPointer { p in y.withUnsafeMutableBufferPointer { GradientKernels.pointwise(p.baseAddress!, rows: n, inputChannels: n, kernel: p.baseAddress!, outputChannels: n, into: $0.baseAddress!) } }
                        _ = try exact.search(exact.vector(at: 3), top: 5)
                    }
                    return y == expected
                }
            }
            for try await ok in group { #expect(ok) }
        }
    }
}
