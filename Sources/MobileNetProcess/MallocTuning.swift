import CMobileNetProcess

import Foundation

/// The C allocator's settings for long-running processes (`mobilenet serve`, `mobilenet train
/// --fine-tune-at`).
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

    /// Applies `settings` for the whole process (`mallopt(3)`): a fixed `M_MMAP_THRESHOLD` (its
    /// dynamic adjustment off), `M_TRIM_THRESHOLD` and `M_TOP_PAD`. Call it once, early; not when
    /// ``tunedByEnvironment(_:)`` (the user's own setting wins).
    ///
    /// - Returns: whether the allocator took every setting (false for a threshold out of
    ///   4 KiB ... 32 MiB, or a negative trim threshold or pad).
    @discardableResult
    public static func apply(_ settings: MallocSettings) -> Bool {
        guard settings.trimThreshold >= 0, settings.topPad >= 0, useFixedMmapThreshold(settings.mmapThreshold) else { return false }
        let trim = mn_set_trim_threshold(settings.trimThreshold) == 1
        let pad = mn_set_top_pad(settings.topPad) == 1
        return trim && pad
    }

    /// The largest fixed `M_MMAP_THRESHOLD` glibc accepts on 64-bit Linux (`HEAP_MAX_SIZE / 2`).
    public static let maximumMmapThreshold = 32 << 20

    /// Keeps freed blocks of up to 32 MiB in the heap instead of returning them to the system, for
    /// a process that allocates and frees the same large buffers over and over (a training loop:
    /// every step of `FineTuningNetwork` at batch 32 and 224x224 allocates ~260 MB of activations
    /// and gradients in blocks of 1 to 15 MB). With glibc's defaults each step's fresh blocks are
    /// new `mmap`s whose pages the kernel clears on first touch: 14% of a step's cycles in a
    /// profile. Sets `M_MMAP_THRESHOLD` to 32 MiB and `M_TRIM_THRESHOLD` to 1 GiB (`mallopt(3)`).
    /// The resident size then stays near the peak of one step for the life of the process, which
    /// is what a training process wants; a server should use ``apply(_:)`` with ``MallocSettings/server``.
    ///
    /// - Returns: whether the allocator took both settings.
    @discardableResult
    public static func keepFreedBlocksForTraining() -> Bool {
        let mmap = mn_set_mmap_threshold(Int32(maximumMmapThreshold)) == 1
        let trim = mn_set_trim_threshold(1 << 30) == 1
        return mmap && trim
    }

    /// Whether the environment already tunes glibc's allocator (`MALLOC_MMAP_THRESHOLD_`,
    /// `MALLOC_TRIM_THRESHOLD_` or a `glibc.malloc.*` tunable in `GLIBC_TUNABLES`): a program should
    /// then leave the allocator alone, so the user's own setting wins.
    ///
    /// - Parameter environment: the process environment (default: this process's).
    public static func tunedByEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
        environment["MALLOC_MMAP_THRESHOLD_"] != nil || environment["MALLOC_TRIM_THRESHOLD_"] != nil
            || environment["GLIBC_TUNABLES"]?.contains("glibc.malloc.") == true
    }
}

/// Settings of glibc's allocator for a long-running process (``MallocTuning/apply(_:)``).
public struct MallocSettings: Sendable, Hashable {
    /// Blocks of at least this many bytes get their own `mmap` (fixed: no dynamic adjustment).
    public var mmapThreshold: Int
    /// Free memory at the top of a heap above this many bytes is returned to the system.
    public var trimThreshold: Int
    /// Extra bytes taken from the system whenever a heap grows.
    public var topPad: Int

    /// Settings with these values.
    public init(mmapThreshold: Int, trimThreshold: Int, topPad: Int) {
        self.mmapThreshold = mmapThreshold
        self.trimThreshold = trimThreshold
        self.topPad = topPad
    }

    /// `mobilenet serve`'s: an 8 MiB mmap threshold, 64 MiB trim threshold, 16 MiB top pad.
    ///
    /// A request's buffers at batch 1 (a decoded photo of 0.5-3 MB, the 0.6 MB input, the
    /// network's activations of up to 4.8 MB) come from the heaps and stay there between
    /// requests; larger ones (batches, big photos) are mmaps returned when freed, so the heaps
    /// cannot fragment with them. With glibc's 128 KiB (fixed) each request took about 950 page
    /// faults for fresh mmaps and trimmed heaps, 4-6 ms of a 20 ms request at concurrency 1 on a
    /// 2-core AMD EPYC VM; with these, none (2026-12-07, `scripts/bench/serve_bench.py`).
    /// Under a paced 40 req/s soak of mixed batch sizes the resident size stayed flat
    /// (`scripts/bench/serve_soak.py`; README).
    public static let server = MallocSettings(mmapThreshold: 8 << 20, trimThreshold: 64 << 20, topPad: 16 << 20)
}
