/// Strict matching of stored Keras weights to the architecture's layers: by layer name, then by
/// variable position; every weight used once, shapes checked, and a readable diagnosis of the
/// usual mistakes (another alpha, a file with or without the top, another class count).
struct WeightMatcher {
    let configuration: MobileNetV2Configuration
    let layers: [LayerSpec]
    let weights: KerasWeightSet

    /// The values of every weight variable, by layer name, in Keras's variable order.
    func match() throws(ModelError) -> [String: [[Float]]] {
        let source = weights.source
        var stored: [String: KerasLayerWeights] = [:]
        for layer in weights.layers {
            guard stored[layer.name] == nil else { throw .duplicateLayer(layer.name, source: source) }
            stored[layer.name] = layer
        }
        if !configuration.includeTop, let top = stored["predictions"] {
            throw .unexpectedClassifier(classes: top.arrays.first?.shape.last ?? 0, source: source)
        }
        try checkAlpha(stored)

        var result: [String: [[Float]]] = [:]
        for layer in layers where !layer.weights.isEmpty {
            guard let found = stored.removeValue(forKey: layer.name) else {
                if layer.name == "predictions" { throw .missingClassifier(source: source) }
                throw .missingLayer(layer: layer.name, source: source)
            }
            let expectedNames = layer.weights.map(\.name)
            guard found.arrays.count == layer.weights.count else {
                throw .variableCountMismatch(layer: layer.name, expected: expectedNames, found: found.arrays.map(\.name), source: source)
            }
            var values: [[Float]] = []
            for (spec, array) in zip(layer.weights, found.arrays) {
                // Keras 3 files name variables by position; legacy files by Keras name.
                // Keras 3 calls the DepthwiseConv2D weight `kernel` where Keras 2 says `depthwise_kernel`.
                let sameName = array.name == spec.name || (spec.name == "depthwise_kernel" && array.name == "kernel")
                if Int(array.name) == nil && !sameName {
                    throw .variableCountMismatch(layer: layer.name, expected: expectedNames, found: found.arrays.map(\.name), source: source)
                }
                if array.shape != spec.shape {
                    if layer.name == "predictions", spec.name == "kernel" || spec.name == "bias",
                       array.shape.last != spec.shape.last, array.shape.count == spec.shape.count {
                        throw .classCountMismatch(expected: configuration.classes, found: array.shape.last ?? 0, source: source)
                    }
                    throw .shapeMismatch(layer: layer.name, variable: spec.name, expected: spec.shape, found: array.shape, source: source)
                }
                if let problem = Self.valueProblem(array.values, variable: spec.name) {
                    throw .invalidWeights(layer: layer.name, variable: spec.name, reason: problem, source: source)
                }
                values.append(array.values)
            }
            result[layer.name] = values
        }
        if !stored.isEmpty {
            let order = weights.layers.map(\.name).filter { stored[$0] != nil }
            throw .unusedLayers(order, source: source)
        }
        return result
    }

    /// Why `values` cannot be used: a NaN or infinite value, or a negative moving variance (whose
    /// square root is NaN) would make every output NaN or garbage without an error. Nil when fine.
    static func valueProblem(_ values: [Float], variable: String) -> String? {
        for (i, v) in values.enumerated() {
            if !v.isFinite { return "value \(v) at index \(i) is not a finite number" }
            if variable == "moving_variance", v < 0 { return "variance \(v) at channel \(i) is negative" }
        }
        return nil
    }

    /// When the stored layer widths disagree with the configuration but agree with another
    /// official width multiplier, report that instead of the first mismatching shape.
    private func checkAlpha(_ stored: [String: KerasLayerWeights]) throws(ModelError) {
        func widths(_ layers: [LayerSpec]) -> [String: [Int]] {
            var result: [String: [Int]] = [:]
            for layer in layers where layer.name != "predictions" {
                if let first = layer.weights.first { result[layer.name] = first.shape }
            }
            return result
        }
        let expected = widths(layers)
        let matchesExpected = expected.allSatisfy { name, shape in stored[name]?.arrays.first.map { $0.shape == shape } ?? true }
        if matchesExpected { return }
        for alpha in MobileNetV2Configuration.officialAlphas where alpha != configuration.alpha {
            var other = configuration
            other.alpha = alpha
            guard let otherLayers = try? MobileNetV2Architecture.layers(for: other) else { continue }
            let candidate = widths(otherLayers)
            let agrees = candidate.allSatisfy { name, shape in stored[name]?.arrays.first?.shape == shape }
            if agrees { throw .alphaMismatch(expected: configuration.alpha, found: alpha, source: weights.source) }
        }
    }
}

extension KerasWeightSet {
    /// The width multiplier (Keras `alpha`) these MobileNetV2 weights were built for, read from
    /// the layer widths: the official alpha (``MobileNetV2Configuration/officialAlphas``) whose
    /// every convolution kernel shape agrees with the stored one. Nil when none agrees (a
    /// damaged or foreign file: loading it at any alpha reports the first mismatching shape).
    /// A `predictions` layer is not looked at.
    public func widthMultiplier() -> Double? {
        var stored: [String: [Int]] = [:]
        for layer in layers where layer.name != "predictions" {
            if let first = layer.arrays.first { stored[layer.name] = first.shape }
        }
        for alpha in MobileNetV2Configuration.officialAlphas {
            let configuration = MobileNetV2Configuration(alpha: alpha, includeTop: false)
            guard let specs = try? MobileNetV2Architecture.layers(for: configuration) else { continue }
            let agrees = specs.allSatisfy { spec in
                guard let first = spec.weights.first, spec.name != "predictions" else { return true }
                return stored[spec.name] == first.shape
            }
            if agrees { return alpha }
        }
        return nil
    }
}

extension KerasWeightSet {
    /// The values of every weight variable of the network for `configuration`, by Keras layer
    /// name, each layer's arrays in Keras's variable order (``LayerSpec/weights``), matched
    /// strictly as ``MobileNetV2`` matches them: by layer name, then by variable position (Keras 3
    /// files) or name (legacy files); every stored layer used once, shapes checked, no NaN or
    /// infinite value, no negative moving variance.
    ///
    /// - Throws: ``ModelError`` naming the layer and what was expected (another alpha, a missing
    ///   or unexpected classifier, a shape mismatch, unused layers, ...).
    public func matched(to configuration: MobileNetV2Configuration) throws(ModelError) -> [String: [[Float]]] {
        let layers = try MobileNetV2Architecture.layers(for: configuration)
        return try WeightMatcher(configuration: configuration, layers: layers, weights: self).match()
    }
}
