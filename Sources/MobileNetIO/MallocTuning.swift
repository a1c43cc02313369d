import CMobileNetShims

/// The C allocator's settings for long-running processes (`mobilenet serve`).
///
/// glibc's `malloc` serves a block of at least `M_MMAP_THRESHOLD` bytes (128 KiB by default)
/// with its own `mmap`, returned to the system when freed. But the threshold is *dynamic*: each
/// time such a block is freed, it rises to that block's size (up to 32 MiB). After the first
/// network-buffer-sized block is freed, the per-request buffers of a server (decoded images of
/// 600 KB, batches of several MB, allocated and freed on many threads) come from the per-thread
/// heaps instead, and those fragment: measured with `mobilenet serve` under a paced load of
/// varying batch sizes, the resident size grew from 86 to 467 MB in 4 minutes (and to 860 MB in
/// a 10-minute soak) and kept growing; with a fixed threshold it stayed at 225-265 MB.
/// Setting the threshold explicitly turns the dynamic adjustment off (glibc `mallopt(3)`).
public enum MallocTuning {
    /// glibc's default (and initial) threshold.
    public static let defaultMmapThreshold = 128 * 1024

    /// Fixes `M_MMAP_THRESHOLD` (which also turns off its dynamic adjustment) for the whole
    /// process. Call it once, early, in a process that runs for long with varying batch sizes;
    /// a program that sets `GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...` or
    /// `MALLOC_MMAP_THRESHOLD_` itself should not call it.
    ///
    /// - Parameter bytes: the threshold, 4 KiB ... 32 MiB (default 128 KiB).
    /// - Returns: whether the allocator took the setting (false for a value out of range).
    @discardableResult
    public static func useFixedMmapThreshold(_ bytes: Int = defaultMmapThreshold) -> Bool {
        guard (4096...(32 << 20)).contains(bytes) else { return false }
        return mn_set_mmap_threshold(Int32(bytes)) == 1
    }
}
