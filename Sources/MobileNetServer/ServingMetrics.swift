import Foundation
import MobileNetServing
import Prometheus

/// The server's Prometheus metrics, exposed at `GET /metrics` in the text format:
///
/// - `mobilenet_http_requests_total{method, route, status}`: requests answered (`route` is the
///   route's template, such as `/v1/models/{name}`, or `unmatched`: never the raw path, so
///   clients cannot grow the series without bound);
/// - `mobilenet_http_request_duration_seconds{route}`: latency histogram;
/// - `mobilenet_batch_size{model}`: images per network run (histogram);
/// - `mobilenet_batch_duration_seconds{model}`: network run time (histogram);
/// - `mobilenet_queue_depth{model}`: images waiting (gauge);
/// - `mobilenet_requests_rejected_total{model}`: requests refused because the queue was full.
public final class ServingMetrics: BatcherObserver, Sendable {
    /// The collector registry (one per server, so tests do not share series).
    public let registry: PrometheusCollectorRegistry

    /// Creates the metrics with an empty registry.
    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    private static let latencyBuckets: [Duration] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10].map { .milliseconds(Int($0 * 1000)) }
    private static let batchBuckets: [Double] = [1, 2, 4, 8, 16, 32, 64, 128]

    /// Records one answered request.
    ///
    /// - Parameters:
    ///   - method: the HTTP method (`GET`, `POST`).
    ///   - route: the matched route's template, or `unmatched`.
    ///   - status: the status code sent.
    ///   - duration: the time from receiving the request to the response.
    public func recordRequest(method: String, route: String, status: Int, duration: Duration) {
        registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "mobilenet", subsystem: "http", metricName: "requests", unitName: "total",
                                                              helpText: "HTTP requests answered, by method, route and status code."),
                             labels: [("method", method), ("route", route), ("status", String(status))]).increment()
        registry.makeDurationHistogram(descriptor: MetricNameDescriptor(namespace: "mobilenet", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                                                                        helpText: "HTTP request latency, by route."),
                                       labels: [("route", route)], buckets: Self.latencyBuckets).record(duration)
    }

    public func batchRan(model: String, size: Int, duration: Duration) {
        registry.makeValueHistogram(descriptor: MetricNameDescriptor(namespace: "mobilenet", metricName: "batch", unitName: "size",
                                                                     helpText: "Images per network run, by model."),
                                    labels: [("model", model)], buckets: Self.batchBuckets).record(Double(size))
        registry.makeDurationHistogram(descriptor: MetricNameDescriptor(namespace: "mobilenet", metricName: "batch_duration", unitName: "seconds",
                                                                        helpText: "Network run time per batch, by model."),
                                       labels: [("model", model)], buckets: Self.latencyBuckets).record(duration)
    }

    public func queueDepthChanged(model: String, depth: Int) {
        queueGauge(model).set(to: Double(depth))
    }

    public func requestRejected(model: String, images: Int) {
        registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "mobilenet", metricName: "requests_rejected", unitName: "total",
                                                              helpText: "Requests refused because the model's queue was full."),
                             labels: [("model", model)]).increment()
    }

    /// Creates the per-model series at zero, so that they are scraped before the first request.
    public func register(models: [String]) {
        for model in models { queueGauge(model).set(to: 0) }
    }

    private func queueGauge(_ model: String) -> Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "mobilenet", metricName: "queue", unitName: "depth",
                                                            helpText: "Images waiting to run, by model."),
                           labels: [("model", model)])
    }

    /// The metrics in the Prometheus text exposition format.
    public func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }
}
