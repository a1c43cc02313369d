/// The page at `GET /`: pick an image, it is sent to `/v1/classify` and the top 5 shown.
/// Self-contained (no scripts or styles from elsewhere).
enum IndexPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>mobilenet serve</title>
    <style>
      body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
      img { max-width: 100%; max-height: 20rem; display: block; margin: 1rem 0; }
      table { border-collapse: collapse; width: 100%; }
      td { padding: .25rem .5rem; border-bottom: 1px solid #ddd; }
      td.p { text-align: right; font-variant-numeric: tabular-nums; }
      .error { color: #b00; }
      code { background: #f4f4f4; padding: 0 .2rem; }
    </style>
    </head>
    <body>
    <h1>mobilenet serve</h1>
    <p>Choose an image (JPEG, PNG, WebP, GIF or BMP): it is sent to <code>POST /v1/classify?top=5</code>.
    The APIs are described in <a href="/openapi.json">/openapi.json</a>; metrics are at <a href="/metrics">/metrics</a>.</p>
    <input type="file" id="file" accept="image/*">
    <img id="preview" alt="" hidden>
    <div id="result"></div>
    <script>
    const file = document.getElementById("file"), preview = document.getElementById("preview"), result = document.getElementById("result");
    file.addEventListener("change", async () => {
      const chosen = file.files[0];
      if (!chosen) return;
      preview.src = URL.createObjectURL(chosen);
      preview.hidden = false;
      result.textContent = "classifying…";
      try {
        const response = await fetch("/v1/classify?top=5", { method: "POST", body: chosen, headers: { "Content-Type": "application/octet-stream" } });
        const body = await response.json();
        if (!response.ok) { result.innerHTML = ""; const p = document.createElement("p"); p.className = "error"; p.textContent = body.error || response.statusText; result.appendChild(p); return; }
        const table = document.createElement("table");
        for (const entry of body.predictions) {
          const row = table.insertRow();
          row.insertCell().textContent = entry.rank + ".";
          row.insertCell().textContent = entry.label;
          const p = row.insertCell(); p.className = "p"; p.textContent = (entry.probability * 100).toFixed(2) + "%";
        }
        result.innerHTML = ""; result.appendChild(table);
      } catch (error) {
        result.innerHTML = ""; const p = document.createElement("p"); p.className = "error"; p.textContent = String(error); result.appendChild(p);
      }
    });
    </script>
    </body>
    </html>
    """#
}
