import CDNNL
import Foundation
import MobileNetKernels

/// The fast CPU backend: runs a ``/MobileNetKernels/Graph`` with oneDNN 2.x (Intel's deep-learning
/// primitives library, Debian package `libdnnl-dev`; the C API of 2.x is used, which oneDNN 3.x
/// changed).
///
/// How a graph is prepared (in ``makeExecutor(for:)``, once per batch size):
/// - every convolution becomes one oneDNN convolution primitive (a depthwise convolution is a
///   grouped one, groups = channels) with its explicit ``/MobileNetKernels/Padding``, the folded
///   BatchNorm as bias, and ReLU6 as an `eltwise_clip` 0...6 post-op;
/// - a residual ``/MobileNetKernels/Operation/add`` whose one input is a linear convolution read
///   by nothing else becomes a `sum` post-op of that convolution, which writes in place into the
///   buffer of the other input (oneDNN `binary_add` otherwise);
/// - oneDNN chooses the memory formats (`format_tag any`): activations stay in its blocked
///   layouts between primitives, the NHWC input is reordered once at the start and the
///   output once at the end; weights are reordered once into the chosen format and kept;
/// - activation buffers and the scratchpad are planned from the values' lifetimes and reused,
///   so an inference at a batch size seen before allocates no activation memory (only the
///   returned tensor, and oneDNN's small per-call bookkeeping);
/// - an inverted residual block's expansion (1x1) and depthwise (3x3) convolutions run as one
///   primitive (oneDNN's depthwise post-op, ``fusesDepthwise``) where oneDNN has a kernel for
///   the pair: it computes the depthwise rows from the few 1x1 rows they need, so the expanded
///   tensor is never written out; oneDNN offers it for the large early layers only, judging
///   the work per thread (on the 2-core AVX-512 machine at 224x224: block 1 at 2 threads,
///   blocks 1-3 at one);
/// - global pooling and softmax run in plain Swift on NHWC data, the dense layer as oneDNN SGEMM
///   calls on fixed slices of its output columns, spread over the threads.
///
/// Implementations whose name contains `ref` (oneDNN's slow reference kernels, chosen silently
/// when no optimised kernel fits) are rejected with ``OneDNNError/referenceImplementation(node:implementation:)``.
///
/// Threads: the Debian build of oneDNN uses GNU OpenMP, whose worker threads spin for a bounded
/// time (`GOMP_SPINCOUNT`, 300,000 by default) before sleeping. That short spin is what makes a
/// second thread pay off at batch 1 (each of the 55 primitives would otherwise wake a sleeping
/// thread). A program needs to set nothing: with ``ThreadPolicy/adaptive`` (the default) the
/// executor measures each micro-batch size at all threads and at one and uses the faster, so a
/// core kept busy by another process makes it drop to one thread instead of waiting for the
/// worker that shares that core. See `docs/performance.md` for both conditions.
public struct OneDNNBackend: InferenceBackend {
    /// How memory formats are chosen.
    public enum LayoutPolicy: String, Sendable, Hashable {
        /// The default and the fast choice. On CPUs with AVX-512, activations are asked for in
        /// oneDNN's channel-blocked layout `nChw16c` (16 channels, one 512-bit vector, innermost)
        /// and weights in the format each kernel chooses: oneDNN then runs its `jit_1x1` and
        /// `jit_dw` kernels. Left to itself (``library``) it picks its brgemm kernels on NHWC
        /// there, which were 11-17% slower for MobileNetV2's small feature maps (batch 1 and 4,
        /// 1 and 2 threads, Xeon with AVX-512, 2026-12-02; docs/performance.md). On other CPUs
        /// this is ``library`` (oneDNN's AVX2 kernels already choose `nChw8c`). A layer for
        /// which the blocked layout has no optimised kernel gets oneDNN's own choice.
        case blocked
        /// oneDNN chooses every activation and weight format (`format_tag any`).
        case library
        /// Activations are forced to plain NHWC and weights to plain OIHW / GOIHW. Usually
        /// slower; with some shapes oneDNN can only offer its reference kernels, which
        /// ``OneDNNBackend`` then rejects. Meant for diagnostics and for testing that guard.
        case plain
    }

    /// `"onednn"`.
    public let name = "onednn"
    /// OpenMP threads per inference (at least 1).
    public let threads: Int
    /// ``threads``.
    public var threadCount: Int? { threads }
    /// How memory formats are chosen; ``LayoutPolicy/blocked`` by default.
    public let layoutPolicy: LayoutPolicy
    /// The largest batch run through the network at once (at least 1). A larger input batch is
    /// run as micro-batches of this size, whose outputs are concatenated: the activations of one
    /// 224x224 image stay in the caches, those of 32 do not (at batch 32 the expanded
    /// 112x112x96 tensor alone is 154 MB), and the memory-bound depthwise convolutions then
    /// dominate. With ``ThreadPolicy/adaptive`` the micro-batches run side by side on lanes.
    /// See docs/performance.md for the measurements.
    public let microBatch: Int

    /// The default ``microBatch`` with ``ThreadPolicy/adaptive``: 1. One image per
    /// micro-batch, lanes side by side, was the fastest at batch 32 on 2 cores (2026-12-02:
    /// 224-245 images/s against 210-223 with 4, and the least memory); it was 4 before lanes.
    public static let defaultMicroBatch = 1

    /// The default ``microBatch`` with ``ThreadPolicy/fixed``: 4. Without lanes the
    /// micro-batches run one after the other at all threads, and a larger one spreads each
    /// primitive's barrier over more images: under load, `embed --thread-policy fixed` took
    /// 18-25 s with micro-batches of 1 against 7-9 s with 4 (2026-12-02).
    public static let defaultFixedMicroBatch = 4

    /// How many threads each run uses.
    public enum ThreadPolicy: String, Sendable, Hashable, CaseIterable {
        /// The default. An input of several micro-batches runs as lanes: one per thread, each
        /// with single-threaded primitives (with fewer micro-batches than threads, one lane per
        /// micro-batch with a share of the cores), each taking the next micro-batch not yet
        /// taken (a lane whose core is shared runs fewer of them; no barrier between primitives). A
        /// single micro-batch: measure and choose per micro-batch size between
        /// ``OneDNNBackend/threads`` and one thread, trying the other count every 16 runs: all
        /// cores on a quiet machine, one when another process keeps a core busy. Outputs are
        /// bit-identical to ``fixed`` whatever the lane or count, for up to 8 threads per run
        /// (checked on AVX-512 and AVX2; with 9 or more threads in one run oneDNN's AVX-512 jit
        /// kernels split some sums by the thread count: differences up to about 1e-5).
        case adaptive
        /// Always ``OneDNNBackend/threads``.
        case fixed
    }

    /// How many threads each run uses; ``ThreadPolicy/adaptive`` by default.
    public let threadPolicy: ThreadPolicy

    /// Whether a 1x1 convolution and the 3x3 depthwise convolution that is its only reader (an
    /// inverted residual block's expansion and depthwise layers, paper section 3.3; stride 1 or
    /// 2) run as one oneDNN primitive with a depthwise post-op, where oneDNN offers a kernel for
    /// the pair (true by default). oneDNN decides by the layer's size against the L2 cache and
    /// the thread count: on the 2-core AVX-512 machine at 224x224 it fused block 1 (112x112x16
    /// in, 56x56x96 out) at 2 threads and blocks 1-3 at one. Results differ from the unfused
    /// pair only within float rounding (tested against the reference backend); the plans of
    /// different thread counts, fused differently, gave the same bits there (tested).
    public let fusesDepthwise: Bool

    /// The number of cores this process may use (`ProcessInfo.activeProcessorCount`).
    public static var defaultThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// Creates the backend.
    ///
    /// - Parameters:
    ///   - threads: OpenMP threads per inference; `nil` (the default) uses all cores
    ///     (``defaultThreads``). Values below 1 are treated as 1.
    ///   - layoutPolicy: how memory formats are chosen (keep ``LayoutPolicy/blocked``).
    ///   - microBatch: the largest batch run at once (when nil, ``defaultMicroBatch``, or
    ///     ``defaultFixedMicroBatch`` with the fixed thread policy). Values
    ///     below 1 are treated as 1. It changes speed and memory, not results beyond float
    ///     rounding. (The `mobilenet` command reads `$MOBILENET_MICRO_BATCH`; the library reads
    ///     no environment variable.)
    ///   - threadPolicy: ``ThreadPolicy/adaptive`` (the default) or ``ThreadPolicy/fixed``.
    ///   - fusesDepthwise: see ``fusesDepthwise`` (keep the default, true).
    public init(threads: Int? = nil, layoutPolicy: LayoutPolicy = .blocked, microBatch: Int? = nil, threadPolicy: ThreadPolicy = .adaptive,
                fusesDepthwise: Bool = true) {
        self.fusesDepthwise = fusesDepthwise
        self.threadPolicy = threadPolicy
        self.threads = max(1, threads ?? Self.defaultThreads)
        self.layoutPolicy = layoutPolicy
        self.microBatch = max(1, microBatch ?? (threadPolicy == .fixed ? Self.defaultFixedMicroBatch : Self.defaultMicroBatch))
    }

    /// Validates `graph`, reorders its weights for oneDNN and plans the buffers for batch size 1
    /// (other batch sizes are planned on first use and cached).
    ///
    /// - Throws: ``OneDNNError``: ``OneDNNError/graph(_:)`` for an invalid graph,
    ///   ``OneDNNError/unsupportedOperation(node:operation:)`` for a stand-alone BatchNorm or
    ///   ReLU6 (build the graph with BatchNorm folded), ``OneDNNError/referenceImplementation(node:implementation:)``
    ///   when oneDNN offers only its reference kernel, ``OneDNNError/library(call:status:)`` when
    ///   a oneDNN call fails.
    public func makeExecutor(for graph: Graph) throws -> any GraphExecutor {
        try OneDNNExecutor(graph: graph, threads: threads, layoutPolicy: layoutPolicy, microBatch: microBatch, threadPolicy: threadPolicy,
                           fusesDepthwise: fusesDepthwise)
    }
}

extension OneDNNBackend {
    /// What this backend runs for `graph`: its primitives in order with the oneDNN
    /// implementation of each (what `ONEDNN_VERBOSE` reports), for a micro-batch of `batch`
    /// images (at most ``microBatch``), at ``threads`` threads. For diagnostics: which kernels
    /// oneDNN picked on this CPU with this ``layoutPolicy``.
    ///
    /// - Throws: what ``makeExecutor(for:)`` throws.
    public func planSummary(for graph: Graph, batch: Int = 1) throws -> OneDNNPlanSummary {
        try OneDNNExecutor(graph: graph, threads: threads, layoutPolicy: layoutPolicy, microBatch: microBatch, threadPolicy: .fixed,
                           fusesDepthwise: fusesDepthwise).summary(batch: batch)
    }

    /// Whether oneDNN runs its AVX-512 kernels on this CPU (`dnnl_get_effective_cpu_isa` is
    /// `avx512_core` or later; `ONEDNN_MAX_CPU_ISA=AVX2` turns it off). ``LayoutPolicy/blocked``
    /// asks for `nChw16c` activations only then.
    public static var runsAVX512: Bool { OneDNNExecutor.hasAVX512 }
}

/// The primitives of one oneDNN plan (``OneDNNBackend/planSummary(for:batch:)``).
public struct OneDNNPlanSummary: Sendable, Equatable {
    /// One oneDNN primitive.
    public struct Primitive: Sendable, Equatable {
        /// The Keras layer name it computes (a convolution carries its BatchNorm and ReLU6, and
        /// the residual add its output is summed into), or the node whose value a reorder converts.
        public var node: String
        /// oneDNN's implementation name, such as `jit_1x1:avx512_core` or `brgconv_1x1:avx512_core`.
        public var implementation: String
    }

    /// The primitives in execution order (convolutions, unfused adds, format reorders).
    public var primitives: [Primitive]
    /// Bytes of the activation buffers the plan holds.
    public var activationBytes: Int
}

/// Why the oneDNN backend could not prepare or run a graph.
public enum OneDNNError: Error, Equatable, CustomStringConvertible {
    /// A oneDNN C API call returned an error status (`dnnl_status_t`).
    case library(call: String, status: Int)
    /// oneDNN chose a reference (unoptimised) implementation for a node; its name is given
    /// (such as `ref:any`). Running it would take seconds per image.
    case referenceImplementation(node: String, implementation: String)
    /// The node's operation is not run by this backend (stand-alone BatchNorm or ReLU6: build
    /// the graph with BatchNorm folded).
    case unsupportedOperation(node: String, operation: String)
    /// The graph itself is invalid.
    case graph(GraphError)

    public var description: String {
        switch self {
        case .library(let call, let status): "oneDNN: \(call) failed with status \(status)"
        case .referenceImplementation(let node, let implementation):
            "oneDNN chose its reference implementation '\(implementation)' for node \(node); refusing to run it (it is orders of magnitude slower)"
        case .unsupportedOperation(let node, let operation): "oneDNN backend: node \(node): \(operation) is not supported (fold BatchNorm into the convolutions)"
        case .graph(let error): error.description
        }
    }
}

extension OneDNNError: LocalizedError {
    /// The same as ``description``: a complete sentence naming the file or value concerned.
    public var errorDescription: String? { description }
}
