import CMobileNetProcess

/// The BLAS thread pool of the process (OpenBLAS, Debian's `libopenblas0-pthread`), which the
/// exact search, FAISS and the training kernels use.
public enum BLASThreads {
    /// Ends OpenBLAS's idle worker threads now; the next multi-threaded BLAS call starts them
    /// again (a few hundred microseconds, as after every fork). Safe to call at any time and from
    /// any thread: it waits until no BLAS call of this package runs.
    ///
    /// Why: OpenBLAS starts its workers when the library is loaded, before `main`, and each then
    /// spins (yielding) for about 2^28 processor cycles, 0.1 s, before it sleeps. A short-lived
    /// program that does not need BLAS in that first tenth of a second, such as `mobilenet
    /// classify` on one photo, otherwise shares its cores with that spinning: measured on 2 cores
    /// (AMD EPYC, 2026-12-02, medians of 12-14 interleaved runs), process start to one photo
    /// classified took 0.282 s against 0.266 s with a single BLAS thread on a quiet machine, and
    /// 0.301 against 0.264 s with a busy process on one core. The `mobilenet` command calls this
    /// first thing.
    ///
    /// - Returns: whether there was an OpenBLAS pool to end (false with another BLAS library).
    @discardableResult
    public static func releaseIdle() -> Bool {
        mn_blas_release_threads() == 1
    }
}
