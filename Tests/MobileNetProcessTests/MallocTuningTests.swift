import MobileNetProcess
import Testing

@Suite("Allocator tuning")
struct MallocTuningTests {
    @Test("a fixed mmap threshold is taken in range, refused out of it")
    func threshold() {
        #expect(MallocTuning.useFixedMmapThreshold())
        #expect(MallocTuning.useFixedMmapThreshold(1 << 20))
        #expect(!MallocTuning.useFixedMmapThreshold(0))
        #expect(!MallocTuning.useFixedMmapThreshold(64 << 20))
        #expect(MallocTuning.useFixedMmapThreshold(MallocTuning.defaultMmapThreshold))
    }

    @Test("the environment's own allocator settings are recognised, others are not")
    func environment() {
        #expect(!MallocTuning.tunedByEnvironment([:]))
        #expect(!MallocTuning.tunedByEnvironment(["GLIBC_TUNABLES": "glibc.pthread.rseq=0", "MALLOC_ARENA": "x"]))
        #expect(MallocTuning.tunedByEnvironment(["MALLOC_MMAP_THRESHOLD_": "1048576"]))
        #expect(MallocTuning.tunedByEnvironment(["MALLOC_TRIM_THRESHOLD_": "0"]))
        #expect(MallocTuning.tunedByEnvironment(["GLIBC_TUNABLES": "glibc.pthread.rseq=0:glibc.malloc.trim_threshold=1"]))
    }

    @Test("the training setting is taken (32 MiB mmap threshold, 1 GiB trim threshold)")
    func training() {
        #expect(MallocTuning.keepFreedBlocksForTraining())
        #expect(MallocTuning.apply(.server))  // back to the server's setting for the other tests
    }

    @Test("the server's settings are taken; out-of-range ones are refused")
    func server() {
        #expect(MallocSettings.server == MallocSettings(mmapThreshold: 8 << 20, trimThreshold: 64 << 20, topPad: 16 << 20))
        #expect(MallocTuning.apply(.server))
        #expect(!MallocTuning.apply(MallocSettings(mmapThreshold: 64 << 20, trimThreshold: 0, topPad: 0)))
        #expect(!MallocTuning.apply(MallocSettings(mmapThreshold: 1 << 20, trimThreshold: -1, topPad: 0)))
        #expect(MallocTuning.apply(.server))
    }
}
