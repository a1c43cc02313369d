import MobileNetIO
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
}
