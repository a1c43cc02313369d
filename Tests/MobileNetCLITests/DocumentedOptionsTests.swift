import Foundation
import MobileNetTestSupport
import Testing

/// The README and docs/ name the CLI's options by hand: checked here against the parser itself
/// (ArgumentParser's `--experimental-dump-help`), in both directions.
@Suite("documented options")
struct DocumentedOptionsTests {
    /// Every long option of every subcommand: its names (an inverted flag has two) and where it is.
    static func options() throws -> [(names: [String], command: String)] {
        let run = try CLI.run(["--experimental-dump-help"])
        #expect(run.status == 0, "\(run.stderr)")
        let root = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        var found: [(names: [String], command: String)] = []
        func walk(_ command: [String: Any], path: String) {
            for argument in command["arguments"] as? [[String: Any]] ?? [] {
                let names = (argument["names"] as? [[String: Any]] ?? []).filter { $0["kind"] as? String == "long" }.compactMap { $0["name"] as? String }
                guard !names.isEmpty && names != ["help"] else { continue }
                // An inverted flag (`--x/--no-x`) is dumped as two arguments: one option.
                if argument["kind"] as? String == "flag", let name = names.first, name.hasPrefix("no-"),
                   let last = found.last, last.command == path, last.names == [String(name.dropFirst(3))] {
                    found[found.count - 1].names.append(name)
                    continue
                }
                found.append((names, path))
            }
            for sub in command["subcommands"] as? [[String: Any]] ?? [] {
                walk(sub, path: path + " " + (sub["commandName"] as? String ?? "?"))
            }
        }
        walk(try #require(root["command"] as? [String: Any]), path: "mobilenet")
        return found
    }

    /// `--name` as a whole word of `text`.
    static func mentions(_ text: String, _ name: String) -> Bool {
        var rest = text[...]
        while let range = rest.range(of: "--" + name) {
            let next = rest[range.upperBound...].first
            if next.map({ !($0.isLetter || $0.isNumber || $0 == "-") }) ?? true { return true }
            rest = rest[range.upperBound...]
        }
        return false
    }

    @Test("every option of every subcommand is named in the README or docs/, and every option in the README's command table exists")
    func optionsAreDocumented() throws {
        let root = TestData.repositoryRoot
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        var docs = readme
        let docsFolder = root.appendingPathComponent("docs")
        for file in try FileManager.default.contentsOfDirectory(atPath: docsFolder.path) where file.hasSuffix(".md") {
            docs += try String(contentsOf: docsFolder.appendingPathComponent(file), encoding: .utf8)
        }
        let options = try Self.options()
        #expect(options.count > 50, "\(options.count) options found")
        for option in options where !option.names.contains(where: { Self.mentions(docs, $0) }) {
            Issue.record("\(option.command) --\(option.names[0]) is not named in README.md or docs/")
        }
        // The command table's synopses (`| `mobilenet ...` |`): every option there is one the parser has.
        let known = Set(options.flatMap(\.names))
        for line in readme.split(separator: "\n") where line.hasPrefix("| `mobilenet") {
            let synopsis = line.components(separatedBy: "` |").first ?? ""
            var rest = synopsis[...]
            while let range = rest.range(of: "--") {
                let name = String(rest[range.upperBound...].prefix { $0.isLetter || $0.isNumber || $0 == "-" })
                #expect(known.contains(name), "README command table names --\(name), which no subcommand has: \(synopsis.prefix(80))")
                rest = rest[range.upperBound...]
            }
        }
    }
}
