import Foundation
import MobileNet
import MobileNetTestSupport
import Testing

@Suite struct HeadGradientTests {
    /// Small random data: n samples of d features, labels in 0..<classes.
    func data(n: Int, d: Int, classes: Int, seed: UInt64) -> (Matrix, [Int]) {
        var random = SeededRandom(seed: seed)
        let x = Matrix(rows: n, columns: d, values: (0..<(n * d)).map { _ in random.uniform() * 4 - 1 })
        return (x, (0..<n).map { $0 % classes })
    }

    /// Central finite differences in Double against the hand-derived gradients, for every
    /// parameter of a head with a hidden ReLU layer, dropout, L2, label smoothing and class weights.
    @Test(arguments: [(hidden: Int?.none, dropout: 0.0), (hidden: 4, dropout: 0.3)])
    func gradientsMatchFiniteDifferences(hidden: Int?, dropout: Double) throws {
        let (x, labels) = data(n: 6, d: 5, classes: 3, seed: 7)
        var random = SeededRandom(seed: 3)
        var head = ClassifierHead(inputs: 5, classes: 3, hidden: hidden, dropout: dropout, random: &random)
        // Non-zero biases so their gradients are exercised away from the initial point.
        head.parameters = head.parameters.map { $0.enumerated().map { $0.element + 0.01 * Double($0.offset % 5) } }
        let objective = HeadObjective(labelSmoothing: 0.1, l2: 0.01, classWeights: [1.0, 2.0, 0.5])
        var r = SeededRandom(seed: 11)
        let analytic = try objective.evaluate(head: head, x: x, labels: labels, training: true, random: &r).gradients
        let h = 1e-6
        var maxError = 0.0
        for p in head.parameters.indices {
            for i in head.parameters[p].indices {
                var plus = head, minus = head
                plus.parameters[p][i] += h
                minus.parameters[p][i] -= h
                var r1 = SeededRandom(seed: 11), r2 = SeededRandom(seed: 11)
                let lp = try objective.evaluate(head: plus, x: x, labels: labels, training: true, random: &r1).loss
                let lm = try objective.evaluate(head: minus, x: x, labels: labels, training: true, random: &r2).loss
                let numeric = (lp - lm) / (2 * h)
                maxError = max(maxError, abs(numeric - analytic[p][i]) / max(1, abs(numeric)))
            }
        }
        #expect(maxError < 1e-6, "max relative gradient error \(maxError)")
    }

    /// The loss value itself: one sample, two classes, no smoothing: −log softmax.
    @Test func lossValue() throws {
        let head = ClassifierHead(layers: [.dense(DenseLayer(inputs: 2, outputs: 2, kernel: [1, 0, 0, 1], bias: [0, 0]))])
        var r = SeededRandom(seed: 0)
        let result = try HeadObjective().evaluate(head: head, x: Matrix(rows: 1, columns: 2, values: [2, 0]), labels: [0], training: false, random: &r)
        #expect(abs(result.loss - log(1 + exp(-2))) < 1e-12)
        // Label smoothing 0.2 over 2 classes: targets (0.9, 0.1).
        let smoothed = try HeadObjective(labelSmoothing: 0.2).evaluate(head: head, x: Matrix(rows: 1, columns: 2, values: [2, 0]), labels: [0], training: false, random: &r)
        #expect(abs(smoothed.loss - (0.9 * log(1 + exp(-2)) + 0.1 * log(1 + exp(2)))) < 1e-12)
    }

    /// Keras Adam's first step moves every weight by lr·sign(g) (bias-corrected m/√v = ±1).
    @Test func adamFirstStepIsKeras() {
        var optimizer = Optimizer(.adam(learningRate: 0.01))
        var parameters: [[Double]] = [[1, 2, 3]]
        optimizer.update(&parameters, gradients: [[0.5, -2, 0]])
        #expect(abs(parameters[0][0] - (1 - 0.01 * 0.5 / (0.5 + 1e-7 / (1 - 0.999).squareRoot() * 1))) < 1e-9)
        #expect(abs(parameters[0][1] - 2.01) < 1e-6)
        #expect(parameters[0][2] == 3)
        var sgd = Optimizer(.sgd(learningRate: 0.1, momentum: 0.9))
        var p: [[Double]] = [[1]]
        sgd.update(&p, gradients: [[1]])
        sgd.update(&p, gradients: [[1]])
        // v1 = -0.1, w = 0.9; v2 = -0.09 - 0.1 = -0.19, w = 0.71.
        #expect(abs(p[0][0] - 0.71) < 1e-12)
    }
}

@Suite struct HeadTrainerTests {
    /// Two Gaussian blobs per class in 8-d: separable, so training must reach high accuracy.
    func blobs(perClass: Int, classes: Int, seed: UInt64) -> LabelledMatrix {
        var random = SeededRandom(seed: seed)
        var values: [Double] = []
        var labels: [Int] = []
        for c in 0..<classes {
            for _ in 0..<perClass {
                for j in 0..<8 { values.append((j == c ? 3.0 : 0.0) + random.uniform() - 0.5) }
                labels.append(c)
            }
        }
        return LabelledMatrix(features: Matrix(rows: labels.count, columns: 8, values: values), labels: labels)
    }

    @Test func sameSeedSameModelAndLearns() throws {
        let train = blobs(perClass: 20, classes: 3, seed: 1), val = blobs(perClass: 5, classes: 3, seed: 2)
        var settings = TrainingSettings()
        settings.epochs = 30
        settings.batchSize = 8
        settings.learningRate(0.05)
        let a = try HeadTrainer(settings: settings).train(train: train, validation: val, classes: 3)
        let b = try HeadTrainer(settings: settings).train(train: train, validation: val, classes: 3)
        #expect(a.head == b.head)
        #expect(a.history == b.history)
        #expect(a.history.last?.validationAccuracy == 1.0)
        #expect(a.history.first!.loss > a.history.last!.loss)
        settings.seed = 43
        let c = try HeadTrainer(settings: settings).train(train: train, validation: val, classes: 3)
        #expect(c.head != a.head)
    }

    @Test("a head whose loss or weights stop being finite is a typed error naming the epoch, after that epoch is reported")
    func divergenceStopsTraining() throws {
        let train = blobs(perClass: 10, classes: 2, seed: 5), val = blobs(perClass: 5, classes: 2, seed: 6)
        var settings = TrainingSettings()
        settings.epochs = 5
        settings.l2 = 1e308
        var reported: [Int] = []
        #expect { try HeadTrainer(settings: settings).train(train: train, validation: val, classes: 2) { reported.append($0.epoch) } } throws: { error in
            guard case .headDiverged(let epoch, _) = error as? ClassifierTrainingError else { return false }
            return epoch == reported.last && epoch < 5
        }
    }

    @Test func earlyStoppingRestoresBestEpoch() throws {
        let train = blobs(perClass: 10, classes: 2, seed: 5)
        // A validation set with the labels swapped: validation loss rises from the first epoch.
        var val = blobs(perClass: 5, classes: 2, seed: 6)
        val.labels = val.labels.map { 1 - $0 }
        var settings = TrainingSettings()
        settings.epochs = 50
        settings.patience = 2
        settings.learningRate(0.05)
        let result = try HeadTrainer(settings: settings).train(train: train, validation: val, classes: 2)
        #expect(result.history.count < 50)
        let best = result.history.min { $0.validationLoss! < $1.validationLoss! }!
        #expect(result.bestEpoch == best.epoch)
        #expect(result.history.count == best.epoch + 2)
        // The returned head reproduces the best validation loss.
        var r = SeededRandom(seed: 0)
        let loss = try HeadObjective().evaluate(head: result.head, x: val.features, labels: val.labels, training: false, random: &r).loss
        #expect(abs(loss - best.validationLoss!) < 1e-5)
    }

    @Test func balancedWeights() {
        #expect(HeadTrainer.balancedWeights(labels: [0, 0, 0, 1], classes: 2) == [4.0 / 6.0, 2.0])
    }
}

extension TrainingSettings {
    mutating func learningRate(_ value: Double) { optimizer = .adam(learningRate: value) }
}

@Suite struct EvaluationTests {
    @Test func metricsByHand() {
        // labels 0,0,1,1,2 ; predictions 0,1,1,1,0
        let p = Matrix(rows: 5, columns: 3, values: [0.8, 0.1, 0.1, 0.3, 0.6, 0.1, 0.2, 0.7, 0.1, 0.1, 0.8, 0.1, 0.5, 0.2, 0.3])
        let report = EvaluationReport(probabilities: p, labels: [0, 0, 1, 1, 2], classNames: ["a", "b", "c"], k: 2)
        #expect(report.accuracy == 0.6)
        #expect(report.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
        #expect(report.perClass[0].precision == 0.5 && report.perClass[0].recall == 0.5)
        #expect(abs(report.perClass[1].precision - 2.0 / 3.0) < 1e-12 && report.perClass[1].recall == 1)
        #expect(report.perClass[2].f1 == 0)
        // top-2: sample 2 (label 0) has 0.3 second → in; sample 5 (label 2) 0.3 second → in.
        #expect(report.topKAccuracy == 1.0)
        #expect(report.table.contains("confusion matrix"))
    }
}

@Suite struct ImageFolderTests {
    func makeFolder(_ counts: [String: Int], extra: [String] = []) throws -> URL {
        let root = try TestData.temporaryDirectory()
        for (name, count) in counts {
            let dir = root.appendingPathComponent(name)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            for i in 0..<count { try Data([0xFF, 0xD8, 0xFF, UInt8(i)]).write(to: dir.appendingPathComponent(String(format: "img%03d.jpg", i))) }
        }
        for path in extra { try Data("notes".utf8).write(to: root.appendingPathComponent(path)) }
        return root
    }

    @Test func classesSortedAndNonImagesSkipped() throws {
        let root = try makeFolder(["b": 3, "a": 2, "C": 2], extra: ["a/readme.txt"])
        let folder = try ImageFolder(root: root)
        #expect(folder.classNames == ["C", "a", "b"])
        #expect(folder.classCounts == [2, 2, 3])
        #expect(folder.warnings.contains { $0.contains("readme.txt") })
    }

    @Test("links to image files count (as classify reads them); links to missing files and FIFOs do not")
    func linkedImages() throws {
        let library = try makeFolder(["x": 3])
        let root = try makeFolder(["a": 1])
        let linked = root.appendingPathComponent("b")
        try FileManager.default.createDirectory(at: linked, withIntermediateDirectories: true)
        for i in 0..<3 {
            try FileManager.default.createSymbolicLink(at: linked.appendingPathComponent("l\(i).jpg"),
                                                       withDestinationURL: library.appendingPathComponent(String(format: "x/img%03d.jpg", i)))
        }
        try FileManager.default.createSymbolicLink(at: linked.appendingPathComponent("dangling.jpg"), withDestinationURL: library.appendingPathComponent("none.jpg"))
        #expect(mkfifo(linked.appendingPathComponent("pipe.jpg").path, 0o600) == 0)
        let folder = try ImageFolder(root: root)
        #expect(folder.classCounts == [1, 3])
        #expect(folder.images.filter { $0.label == 1 }.map(\.url.lastPathComponent) == ["l0.jpg", "l1.jpg", "l2.jpg"])
    }

    @Test func stratifiedSeededSplit() throws {
        let root = try makeFolder(["a": 10, "b": 20, "c": 1])
        let folder = try ImageFolder(root: root)
        let (train, val) = try folder.split(validationFraction: 0.2, seed: 42)
        #expect(val.filter { $0.label == 0 }.count == 2)
        #expect(val.filter { $0.label == 1 }.count == 4)
        #expect(val.filter { $0.label == 2 }.isEmpty)   // a single image stays in training
        #expect(train.count + val.count == 31)
        #expect(Set(train).isDisjoint(with: Set(val)))
        let again = try folder.split(validationFraction: 0.2, seed: 42)
        #expect(again.validation == val)
        let other = try folder.split(validationFraction: 0.2, seed: 7)
        #expect(other.validation != val)
        #expect(folder.warnings.contains { $0.contains("single image") })
    }

    @Test func badFolders() throws {
        let single = try makeFolder(["only": 3])
        #expect(throws: DatasetError.tooFewClasses(path: single.path, found: ["only"])) { try ImageFolder(root: single) }
        let empty = try makeFolder(["a": 2, "b": 0])
        #expect(throws: DatasetError.emptyClass(path: empty.appendingPathComponent("b").path, className: "b")) { try ImageFolder(root: empty) }
        #expect(throws: DatasetError.notADirectory(path: "/nonexistent/x")) { try ImageFolder(root: URL(fileURLWithPath: "/nonexistent/x")) }
    }

    @Test("a class folder whose name is not UTF-8 is an error naming it by its escaped bytes, not silently dropped")
    func undecodableClassFolder() throws {
        let root = try makeFolder(["a": 2, "b": 2, "c": 2])
        defer { try? FileManager.default.removeItem(at: root) }
        // "\xe9t\xe9" (été in Latin-1): made with mkdir(2), since a Swift String cannot hold it.
        let path = Array(root.path.utf8) + [UInt8(ascii: "/"), 0xE9, UInt8(ascii: "t"), 0xE9, 0]
        let made = path.withUnsafeBufferPointer { $0.withMemoryRebound(to: CChar.self) { mkdir($0.baseAddress!, 0o755) } }
        #expect(made == 0)
        let expected = root.path + "/\\xe9t\\xe9"
        #expect(throws: DatasetError.undecodableClassName(path: expected)) { try ImageFolder(root: root) }
        #expect(DatasetError.undecodableClassName(path: expected).description.contains("not valid UTF-8"))
    }
}
