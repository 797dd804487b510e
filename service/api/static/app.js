// The web page of `unpaired serve`: pick a model and direction, drop images, see each input
// next to its translation. Plain JavaScript against the public API (/v1/models, translate);
// text from the server is only ever set with textContent.
"use strict";

const PARALLEL = 4; // requests in flight at once; the server batches them
const KEY_STORAGE = "unpaired.apiKey";
const SUFFIX = { png: ".png", jpeg: ".jpg", webp: ".webp" };

const $ = (selector) => document.querySelector(selector);
const modelSelect = $("#model");
const directionSelect = $("#direction");
const formatSelect = $("#format");
const keyInput = $("#api-key");
const status = $("#status");
const drop = $("#drop");
const fileInput = $("#files");
const results = $("#results");
const template = $("#result-template");

let models = [];
const queue = [];
let running = 0;

function headers(extra = {}) {
  const key = keyInput.value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

function setStatus(text, problem = false) {
  status.textContent = text;
  status.classList.toggle("problem", problem);
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) {
    // not JSON: fall through to the status line
  }
  return `${response.status} ${response.statusText}`;
}

async function loadModels() {
  modelSelect.disabled = directionSelect.disabled = true;
  let response;
  try {
    response = await fetch("/v1/models", { headers: headers() });
  } catch (error) {
    setStatus(`cannot reach the server: ${error.message}`, true);
    return;
  }
  if (response.status === 401) {
    setStatus("This server needs an API key: enter it above.", true);
    modelSelect.replaceChildren(new Option("enter the API key", ""));
    return;
  }
  if (!response.ok) {
    setStatus(`cannot list the models: ${await errorMessage(response)}`, true);
    return;
  }
  models = (await response.json()).models;
  if (models.length === 0) {
    setStatus("The model store is empty: export a model first (unpaired export).", true);
    modelSelect.replaceChildren(new Option("no models", ""));
    return;
  }
  const previous = modelSelect.value;
  modelSelect.replaceChildren(
    ...models.map((m) => {
      const option = new Option(`${m.name} (${m.domains.A} ↔ ${m.domains.B})`, m.name);
      if (m.aliases.length) option.title = `also: ${m.aliases.join(", ")}`;
      return option;
    }),
  );
  if (models.some((m) => m.name === previous)) modelSelect.value = previous;
  modelSelect.disabled = false;
  fillDirections();
  setStatus(`${models.length} model${models.length > 1 ? "s" : ""} ready.`);
}

function fillDirections() {
  const model = models.find((m) => m.name === modelSelect.value);
  if (!model) return;
  directionSelect.replaceChildren(
    ...model.directions.map((d) => new Option(`${d.source} → ${d.target} (${d.name})`, d.name)),
  );
  directionSelect.disabled = false;
}

function stem(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(0, dot) : name;
}

function addFiles(files) {
  const images = [...files].filter((f) => f.type.startsWith("image/") || f.type === "");
  if (!modelSelect.value || directionSelect.disabled) {
    setStatus("Pick a model first.", true);
    return;
  }
  for (const file of images) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.querySelector(".name").textContent = file.name;
    const input = card.querySelector(".input");
    input.addEventListener("error", () => (input.hidden = true)); // not an image: no preview
    input.src = URL.createObjectURL(file);
    results.prepend(card);
    queue.push({
      file,
      card,
      model: modelSelect.value,
      direction: directionSelect.value,
      format: formatSelect.value,
    });
  }
  pump();
}

function pump() {
  while (running < PARALLEL && queue.length) {
    const job = queue.shift();
    running += 1;
    translate(job).finally(() => {
      running -= 1;
      pump();
    });
  }
}

async function translate({ file, card, model, direction, format }) {
  const caption = card.querySelector(".caption");
  const params = new URLSearchParams({ direction, format });
  const url = `/v1/models/${encodeURIComponent(model)}/translate?${params}`;
  try {
    const form = new FormData();
    form.append("file", file, file.name); // the name makes the server's messages name the file
    const response = await fetch(url, { method: "POST", body: form, headers: headers() });
    if (!response.ok) {
      const hint = response.status === 401 ? " (enter the API key above)" : "";
      throw new Error((await errorMessage(response)) + hint);
    }
    const blob = await response.blob();
    const output = card.querySelector(".output");
    output.src = URL.createObjectURL(blob);
    await output.decode();
    const name = stem(file.name) + SUFFIX[format];
    const link = card.querySelector(".download");
    link.href = output.src;
    link.download = name;
    link.textContent = `download ${name}`;
    link.hidden = false;
    const engineMs = Number(response.headers.get("X-Engine-Seconds")) * 1000;
    const batch = response.headers.get("X-Batch-Size");
    caption.textContent = `${response.headers.get("X-Model")} ${response.headers.get("X-Direction")}`;
    card.querySelector(".meta").textContent =
      `${output.naturalWidth}×${output.naturalHeight}, ${(blob.size / 1024).toFixed(1)} KiB · ` +
      `engine ${engineMs.toFixed(1)} ms in a batch of ${batch}`;
    card.dataset.status = "done";
  } catch (error) {
    caption.textContent = "failed";
    card.querySelector(".error").textContent = error.message;
    card.dataset.status = "error";
  }
}

modelSelect.addEventListener("change", fillDirections);
keyInput.value = localStorage.getItem(KEY_STORAGE) || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem(KEY_STORAGE, keyInput.value.trim());
  loadModels();
});
fileInput.addEventListener("change", () => {
  addFiles(fileInput.files);
  fileInput.value = ""; // the same file can be chosen again
});
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  addFiles(event.dataTransfer.files);
});
loadModels();
