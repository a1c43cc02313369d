import Foundation
import Hummingbird
import HTTPTypes
import MobileNetServing

/// The OpenAPI 3.0 description of the server's routes, served at `GET /openapi.json`
/// (hand-written: it is the contract, kept beside the routes it describes), and the check that
/// it names exactly the routes the router registers (``routeMismatches()``).
public enum OpenAPIDocument {
    /// The document, JSON.
    public static let json = #"""
    {
      "openapi": "3.0.3",
      "info": {
        "title": "mobilenet serve",
        "version": "0.1.0",
        "description": "MobileNetV2 classification and embeddings over HTTP: the TensorFlow Serving REST API (/v1/models), the KServe / Open Inference Protocol v2 REST API (/v2), and plain endpoints taking the encoded image as the body. Errors are {\"error\": \"message\"} with 400 (bad input, named), 404 (unknown model or version), 413 (body too large), 415 (a JSON body sent to a plain endpoint), 503 with Retry-After (queue full, not ready, shutting down)."
      },
      "paths": {
        "/v1/models/{name}": {
          "get": {
            "summary": "TensorFlow Serving model status",
            "parameters": [{"$ref": "#/components/parameters/name"}],
            "responses": {"200": {"description": "model_version_status: each served version AVAILABLE, retired or failed ones END", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TFStatus"}}}}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v1/models/{name}/metadata": {
          "get": {
            "summary": "TensorFlow Serving model metadata (signature_def serving_default)",
            "parameters": [{"$ref": "#/components/parameters/name"}],
            "responses": {"200": {"description": "model_spec and metadata.signature_def", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v1/models/{name}:predict": {
          "post": {
            "summary": "TensorFlow Serving predict (row or columnar format)",
            "description": "An instance is a [H][W][3] array preprocessed for the model (-1...1 for the Keras weights) or {\"b64\": base64 of a JPEG, PNG, WebP, GIF or BMP}. signature_name may be omitted or serving_default.",
            "parameters": [{"name": "name", "in": "path", "required": true, "description": "the model name; the path ends in :predict", "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TFPredictRequest"}}}},
            "responses": {
              "200": {"description": "one row of the model's output per instance", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TFPredictResponse"}}}},
              "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
              "413": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        },
        "/v1/models/{name}/versions/{version}": {
          "get": {
            "summary": "TensorFlow Serving status of one version",
            "parameters": [{"$ref": "#/components/parameters/name"}, {"name": "version", "in": "path", "required": true, "description": "the model version (a TF Serving base folder's version folders; 1 for a model file)", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "model_version_status of that version", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TFStatus"}}}}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v1/models/{name}/versions/{version}/metadata": {
          "get": {
            "summary": "TensorFlow Serving metadata of one version",
            "parameters": [{"$ref": "#/components/parameters/name"}, {"name": "version", "in": "path", "required": true, "description": "the model version (a TF Serving base folder's version folders; 1 for a model file)", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "model_spec and metadata.signature_def", "content": {"application/json": {"schema": {"type": "object"}}}}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v1/models/{name}/versions/{version}:predict": {
          "post": {
            "summary": "TensorFlow Serving predict on a version (a TF Serving base folder's version folders; 1 for a model file)",
            "parameters": [{"$ref": "#/components/parameters/name"}, {"name": "version", "in": "path", "required": true, "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TFPredictRequest"}}}},
            "responses": {"200": {"description": "as :predict", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/TFPredictResponse"}}}}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v2": {"get": {"summary": "KServe v2 server metadata", "responses": {"200": {"description": "name, version, extensions"}}}},
        "/v2/health/live": {"get": {"summary": "KServe v2 liveness", "responses": {"200": {"description": "{\"live\": true}"}}}},
        "/v2/health/ready": {"get": {"summary": "KServe v2 readiness: 200 once every model is loaded", "responses": {"200": {"description": "{\"ready\": true}"}, "503": {"description": "{\"ready\": false}"}}}},
        "/v2/models/{name}": {
          "get": {
            "summary": "KServe v2 model metadata",
            "parameters": [{"$ref": "#/components/parameters/name"}],
            "responses": {"200": {"description": "name, versions, platform, inputs, outputs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KServeMetadata"}}}}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v2/models/{name}/versions/{version}": {
          "get": {
            "summary": "KServe v2 metadata of one model version",
            "parameters": [{"$ref": "#/components/parameters/name"}, {"name": "version", "in": "path", "required": true, "description": "the model version (a TF Serving base folder's version folders; 1 for a model file)", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "name, versions, platform, inputs, outputs", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KServeMetadata"}}}}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v2/models/{name}/versions/{version}/ready": {
          "get": {"summary": "KServe v2 readiness of one model version", "parameters": [{"$ref": "#/components/parameters/name"}, {"name": "version", "in": "path", "required": true, "description": "the model version (a TF Serving base folder's version folders; 1 for a model file)", "schema": {"type": "string"}}], "responses": {"200": {"description": "{\"name\": ..., \"ready\": true}"}, "404": {"$ref": "#/components/responses/Error"}}}
        },
        "/v2/models/{name}/versions/{version}/infer": {
          "post": {
            "summary": "KServe v2 inference on one model version",
            "parameters": [{"$ref": "#/components/parameters/name"}, {"name": "version", "in": "path", "required": true, "description": "the model version (a TF Serving base folder's version folders; 1 for a model file)", "schema": {"type": "string"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KServeInferRequest"}}}},
            "responses": {
              "200": {"description": "as /v2/models/{name}/infer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KServeInferResponse"}}}},
              "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
              "413": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        },
        "/v2/models/{name}/ready": {
          "get": {"summary": "KServe v2 model readiness", "parameters": [{"$ref": "#/components/parameters/name"}], "responses": {"200": {"description": "{\"name\": ..., \"ready\": true}"}, "404": {"$ref": "#/components/responses/Error"}}}
        },
        "/v2/models/{name}/infer": {
          "post": {
            "summary": "KServe v2 inference",
            "description": "One input named input_1: FP32 with shape [N, H, W, 3] (preprocessed, flat or nested data), or BYTES with shape [N] whose strings are base64 (or raw) encoded images.",
            "parameters": [{"$ref": "#/components/parameters/name"}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KServeInferRequest"}}}},
            "responses": {
              "200": {"description": "the output tensor", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/KServeInferResponse"}}}},
              "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
              "413": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        },
        "/v1/classify": {
          "post": {
            "summary": "Top-k classes of one encoded image (the body)",
            "parameters": [
              {"name": "model", "in": "query", "required": false, "description": "a classifier (default: the first served)", "schema": {"type": "string"}},
              {"name": "top", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5}}
            ],
            "requestBody": {"$ref": "#/components/requestBodies/Image"},
            "responses": {
              "200": {"description": "predictions with rank, index, label, synset (ImageNet), probability", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Classification"}}}},
              "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"},
              "413": {"$ref": "#/components/responses/Error"}, "415": {"$ref": "#/components/responses/Error"}, "503": {"$ref": "#/components/responses/Unavailable"}
            }
          }
        },
        "/v1/embed": {
          "post": {
            "summary": "The pooled embedding (1280-d, values 0...6) of one encoded image (the body)",
            "parameters": [{"name": "model", "in": "query", "required": false, "description": "any served model (default: the first)", "schema": {"type": "string"}}],
            "requestBody": {"$ref": "#/components/requestBodies/Image"},
            "responses": {"200": {"description": "model, dimension, embedding"}, "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"}, "415": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v1/similar": {
          "post": {
            "summary": "The indexed images most similar to one encoded image (the body), by cosine similarity",
            "parameters": [
              {"name": "index", "in": "query", "required": false, "description": "a served index (default: the first)", "schema": {"type": "string"}},
              {"name": "top", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 5}},
              {"name": "nprobe", "in": "query", "required": false, "description": "IVF cells scanned, with an ANN file (--ann); default: the file's", "schema": {"type": "integer", "minimum": 1, "maximum": 1048576}},
              {"name": "ef_search", "in": "query", "required": false, "description": "HNSW candidate list size, with an ANN file (--ann); default: the file's", "schema": {"type": "integer", "minimum": 1, "maximum": 1048576}}
            ],
            "requestBody": {"$ref": "#/components/requestBodies/Image"},
            "responses": {"200": {"description": "index, matches with rank, file, similarity"}, "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}, "413": {"$ref": "#/components/responses/Error"}, "415": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/v1/catalog": {
          "get": {
            "summary": "The served models (name, kind, classifier, classes, input) and image indexes (name, images)",
            "responses": {"200": {"description": "models and indexes", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Catalog"}}}}, "503": {"$ref": "#/components/responses/Unavailable"}}
          }
        },
        "/v1/indexes/{name}/image": {
          "get": {
            "summary": "An indexed image, as stored (a similarity match's thumbnail); only paths the index holds are served",
            "parameters": [{"name": "name", "in": "path", "required": true, "description": "a served index", "schema": {"type": "string"}},
                           {"name": "file", "in": "query", "required": true, "description": "the file of a similarity match", "schema": {"type": "string"}}],
            "responses": {"200": {"description": "the image bytes (image/jpeg, image/png, image/gif, image/bmp or image/webp)", "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}}},
                          "400": {"$ref": "#/components/responses/Error"}, "404": {"$ref": "#/components/responses/Error"}}
          }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics (text exposition format)", "responses": {"200": {"description": "requests by route and status, latency, batch sizes, queue depth", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.0"}}}},
        "/": {"get": {"summary": "A page to classify an image from the browser", "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}}}}
      },
      "components": {
        "parameters": {
          "name": {"name": "name", "in": "path", "required": true, "description": "the served model name (imagenet by default)", "schema": {"type": "string"}}
        },
        "requestBodies": {
          "Image": {
            "required": true,
            "description": "The encoded image (JPEG, PNG, WebP, GIF or BMP) as the body, or as the part named image (or file) of a multipart/form-data body",
            "content": {
              "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
              "multipart/form-data": {"schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}}
            }
          }
        },
        "responses": {
          "Error": {"description": "the problem, named", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "Unavailable": {"description": "queue full, not ready or shutting down; retry after Retry-After seconds", "headers": {"Retry-After": {"schema": {"type": "integer"}}}, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
        },
        "schemas": {
          "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
          "Binary": {"type": "object", "required": ["b64"], "properties": {"b64": {"type": "string", "format": "byte"}}},
          "Instance": {"oneOf": [{"$ref": "#/components/schemas/Binary"}, {"type": "array", "description": "[H][W][3] preprocessed values", "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}]},
          "TFPredictRequest": {
            "type": "object",
            "properties": {
              "signature_name": {"type": "string", "enum": ["serving_default"]},
              "instances": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}},
              "inputs": {"oneOf": [{"type": "array", "items": {"$ref": "#/components/schemas/Instance"}}, {"type": "object", "properties": {"input_1": {"type": "array", "items": {"$ref": "#/components/schemas/Instance"}}}}]}
            }
          },
          "TFPredictResponse": {
            "type": "object",
            "properties": {
              "predictions": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
              "outputs": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
            }
          },
          "TFStatus": {"type": "object", "properties": {"model_version_status": {"type": "array", "items": {"type": "object", "properties": {"version": {"type": "string"}, "state": {"type": "string"}, "status": {"type": "object"}}}}}},
          "KServeTensor": {"type": "object", "required": ["name", "datatype", "shape"], "properties": {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}}}},
          "KServeMetadata": {"type": "object", "properties": {"name": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}}, "platform": {"type": "string"}, "inputs": {"type": "array", "items": {"$ref": "#/components/schemas/KServeTensor"}}, "outputs": {"type": "array", "items": {"$ref": "#/components/schemas/KServeTensor"}}}},
          "KServeInferRequest": {
            "type": "object", "required": ["inputs"],
            "properties": {
              "id": {"type": "string"},
              "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "object", "required": ["name", "datatype", "shape", "data"], "properties": {"name": {"type": "string", "enum": ["input_1"]}, "datatype": {"type": "string", "enum": ["FP32", "BYTES"]}, "shape": {"type": "array", "items": {"type": "integer"}}, "data": {"type": "array", "items": {}}}}},
              "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}}
            }
          },
          "KServeInferResponse": {"type": "object", "properties": {"model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"}, "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "datatype": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer"}}, "data": {"type": "array", "items": {"type": "number"}}}}}}},
          "Catalog": {"type": "object", "properties": {
            "models": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "kind": {"type": "string", "enum": [\#(ServedModelKind.allCases.map { "\"\($0.rawValue)\"" }.joined(separator: ", "))]}, "classifier": {"type": "boolean"}, "classes": {"type": "integer"}, "input": {"type": "array", "items": {"type": "integer"}}}}},
            "indexes": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "images": {"type": "integer"}}}}}},
          "Classification": {"type": "object", "properties": {"model": {"type": "string"}, "predictions": {"type": "array", "items": {"type": "object", "properties": {"rank": {"type": "integer"}, "index": {"type": "integer"}, "label": {"type": "string"}, "synset": {"type": "string"}, "probability": {"type": "number"}}}}}}
        }
      }
    }
    """#
}

extension OpenAPIDocument {
    /// `METHOD path` of every operation the document describes (`POST /v1/models/{name}:predict`).
    public static var documentedOperations: Set<String> {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any],
              let paths = object["paths"] as? [String: Any] else { return [] }
        var result = Set<String>()
        for (path, item) in paths {
            for method in (item as? [String: Any])?.keys ?? [:].keys where ["get", "post", "put", "delete", "patch"].contains(method) {
                result.insert("\(method.uppercased()) \(path)")
            }
        }
        return result
    }

    /// `METHOD path` of every route the server registers (`ServingRoutes`), as the document spells it: a
    /// TensorFlow Serving `POST /v1/models/{name}` route serves the `:predict` verb
    /// (`/v1/models/{name}:predict`); the 405 answers of GET on POST-only routes are not operations.
    public static var registeredOperations: Set<String> {
        let recorder = RouteRecorder()
        ServingRoutes(state: ServerState(), configuration: ServerConfiguration(), metrics: ServingMetrics()).add(to: recorder)
        var result = Set<String>()
        for (method, path) in recorder.routes {
            // A GET on a POST-only route only answers 405 (TF Serving's model paths have both).
            if method == .get, !path.hasPrefix("/v1/models/"), recorder.routes.contains(where: { $0.method == .post && $0.path == path }) {
                continue
            }
            if method == .post, path.hasPrefix("/v1/models/") {
                result.insert("POST \(path):predict")
            } else {
                result.insert("\(method.rawValue) \(path)")
            }
        }
        return result
    }

    /// The drift between the document and the router, both ways: routes registered but not
    /// documented (schemathesis would never call them), and operations documented but not
    /// registered. Both empty when they agree (tested).
    public static func routeMismatches() -> (undocumented: [String], unregistered: [String]) {
        let documented = documentedOperations, registered = registeredOperations
        return (registered.subtracting(documented).sorted(), documented.subtracting(registered).sorted())
    }
}

/// A ``RouterMethods`` that only records what is registered on it.
final class RouteRecorder: RouterMethods, @unchecked Sendable {
    typealias Context = ServingRequestContext
    private(set) var routes: [(method: HTTPRequest.Method, path: String)] = []

    @discardableResult
    func on<Responder: HTTPResponder>(_ path: RouterPath, method: HTTPRequest.Method, responder: Responder) -> Self where Responder.Context == Context {
        routes.append((method, path.description))
        return self
    }

    @discardableResult
    func add(middleware: any MiddlewareProtocol<Request, Response, Context>) -> Self { self }
}
