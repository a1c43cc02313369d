/// The page at `GET /`: drop or pick an image; it is sent to `/v1/classify` with the chosen
/// classifier and the top 5 are shown, and when an index is served, to `/v1/similar`, whose
/// matches are shown as thumbnails (`/v1/indexes/{name}/image`). The served models and indexes
/// come from `/v1/catalog`. Self-contained (no scripts or styles from elsewhere); the elements
/// the browser test reads have ids (`model`, `file`, `drop`, `predictions`, `similar`, `status`).
enum IndexPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>mobilenet serve</title>
    <style>
      body { font-family: system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
      #drop { border: 2px dashed #999; border-radius: .5rem; padding: 1.5rem; text-align: center; margin: 1rem 0; }
      #drop.over { border-color: #06c; background: #eef5ff; }
      #preview { max-width: 100%; max-height: 20rem; display: block; margin: 1rem auto; }
      table { border-collapse: collapse; width: 100%; }
      td { padding: .25rem .5rem; border-bottom: 1px solid #ddd; }
      td.p { text-align: right; font-variant-numeric: tabular-nums; }
      #similar { display: flex; flex-wrap: wrap; gap: .75rem; }
      figure { margin: 0; width: 9rem; font-size: .8rem; }
      figure img { width: 9rem; height: 9rem; object-fit: cover; border-radius: .25rem; background: #eee; }
      figcaption { overflow-wrap: anywhere; }
      .error { color: #b00; }
      code { background: #f4f4f4; padding: 0 .2rem; }
    </style>
    </head>
    <body>
    <h1>mobilenet serve</h1>
    <p>Drop an image (JPEG, PNG, WebP, GIF or BMP) or choose one: it is sent to <code>POST /v1/classify</code>
    and, when an image index is served, to <code>POST /v1/similar</code>.
    The APIs are described in <a href="/openapi.json">/openapi.json</a>; metrics are at <a href="/metrics">/metrics</a>.</p>
    <label>Classifier <select id="model"></select></label>
    <label id="index-label" hidden>Index <select id="index"></select></label>
    <div id="drop">Drop an image here, or <input type="file" id="file" accept="image/*"></div>
    <p id="status"></p>
    <img id="preview" alt="" hidden>
    <div id="predictions"></div>
    <h2 id="similar-title" hidden>Most similar indexed images</h2>
    <div id="similar"></div>
    <script>
    const $ = (id) => document.getElementById(id);
    const status = (text, error) => { $("status").textContent = text; $("status").className = error ? "error" : ""; };
    function option(select, value, text) { const o = document.createElement("option"); o.value = value; o.textContent = text; select.appendChild(o); }
    async function loadCatalog() {
      try {
        const response = await fetch("/v1/catalog");
        const catalog = await response.json();
        if (!response.ok) { status(catalog.error || response.statusText, true); return; }
        for (const m of catalog.models.filter((m) => m.classifier)) option($("model"), m.name, `${m.name} (${m.classes} classes)`);
        for (const i of catalog.indexes) option($("index"), i.name, `${i.name} (${i.images} images)`);
        $("index-label").hidden = catalog.indexes.length === 0;
        document.body.dataset.ready = "true";
      } catch (error) { status(String(error), true); }
    }
    async function post(url, image) {
      const response = await fetch(url, { method: "POST", body: image, headers: { "Content-Type": "application/octet-stream" } });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || response.statusText);
      return body;
    }
    async function send(image) {
      $("preview").src = URL.createObjectURL(image);
      $("preview").hidden = false;
      $("predictions").innerHTML = ""; $("similar").innerHTML = ""; $("similar-title").hidden = true;
      status("working…");
      try {
        const jobs = [];
        const model = $("model").value;
        if (model) jobs.push(post(`/v1/classify?top=5&model=${encodeURIComponent(model)}`, image).then(showPredictions));
        const index = $("index").value;
        if (index) jobs.push(post(`/v1/similar?top=8&index=${encodeURIComponent(index)}`, image).then((body) => showSimilar(index, body)));
        await Promise.all(jobs);
        status(jobs.length ? "done" : "nothing to do: no classifier or index is served");
      } catch (error) { status(error.message, true); }
    }
    function showPredictions(body) {
      const table = document.createElement("table");
      for (const entry of body.predictions) {
        const row = table.insertRow();
        row.insertCell().textContent = entry.rank + ".";
        row.insertCell().textContent = entry.label;
        const p = row.insertCell(); p.className = "p"; p.textContent = (entry.probability * 100).toFixed(2) + "%";
      }
      $("predictions").appendChild(table);
    }
    function showSimilar(index, body) {
      $("similar-title").hidden = body.matches.length === 0;
      for (const match of body.matches) {
        const figure = document.createElement("figure");
        const img = document.createElement("img");
        img.src = `/v1/indexes/${encodeURIComponent(index)}/image?file=${encodeURIComponent(match.file)}`;
        img.alt = match.file; img.loading = "lazy";
        const caption = document.createElement("figcaption");
        caption.textContent = `${match.similarity.toFixed(3)} ${match.file.split("/").pop()}`;
        figure.append(img, caption);
        $("similar").appendChild(figure);
      }
    }
    $("file").addEventListener("change", () => { if ($("file").files[0]) send($("file").files[0]); });
    const drop = $("drop");
    drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
    drop.addEventListener("dragleave", () => drop.classList.remove("over"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault(); drop.classList.remove("over");
      const image = event.dataTransfer.files[0];
      if (image) send(image);
    });
    loadCatalog();
    </script>
    </body>
    </html>
    """#
}
