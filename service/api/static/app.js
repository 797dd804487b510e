// The web page of `unpaired serve`: pick a model and direction, then either drop images and
// see each input next to its translation (Translate), or send a whole archive or folder of
// images as a bulk job and follow it to its zip of results (Bulk). Plain JavaScript against
// the public API (/v1/models, translate, /v1/jobs); text from the server is only ever set
// with textContent.
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
  const body = await response.json();
  models = body.models;
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
  else if (body.default) modelSelect.value = body.default; // the server's pick: a real model
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
  showModelInfo(model);
}

// --- the model's provenance -------------------------------------------------------------------

const modelInfo = $("#model-info");
const TILING = {
  shared_statistics: "overlapping tiles that share the whole image's normalisation statistics",
  overlap_blending: "plain overlapping tiles, blended at the seams (no shared statistics)",
};

function sha(digest) {
  return digest ? ` (sha256 ${digest.slice(0, 12)}…)` : "";
}

function trainedText(p) {
  const parts = [`Trained here: run ${p.run ?? "unknown"}`];
  if (p.step !== null && p.step !== undefined) parts.push(`step ${p.step}`);
  else if (p.checkpoint) parts.push(`checkpoint ${p.checkpoint}`);
  if (p.model) parts.push(p.model);
  if (p.dataset) parts.push(`dataset ${p.dataset}`);
  const scores = Object.entries(p.metrics ?? {}).map(([direction, m]) => {
    const gain = m.gain_db === null ? "" : ` (${m.gain_db >= 0 ? "+" : ""}${m.gain_db.toFixed(2)} dB)`;
    const psnr = m.psnr === null ? "" : `PSNR ${m.psnr.toFixed(2)} dB${gain}`;
    const ssim = m.ssim === null ? "" : `SSIM ${m.ssim.toFixed(3)}`;
    return `${direction} ${[psnr, ssim].filter(Boolean).join(", ")}`;
  });
  parts.push(scores.length ? `metrics: ${scores.join("; ")}` : "no metrics measured");
  return [parts.join(", ")];
}

function importedText(p, model) {
  const lines = Object.entries(p.files).map(([direction, file]) => {
    const found = p.mapping[direction] ?? {};
    const arch = found.architecture ?? model.architecture?.generator;
    const norm = found.norm ?? model.architecture?.norm;
    const parts = [`Imported from ${file.name}${sha(file.sha256)}`];
    if (file.key) parts.push(`network ${file.key}`);
    parts.push(arch ? `architecture ${arch}` : `${p.format.toUpperCase()} graph`);
    if (found.ngf) parts.push(`ngf ${found.ngf}`);
    if (norm) parts.push(`norm ${norm}`);
    if (found.value_range) parts.push(`values ${found.value_range}`);
    return [direction, parts.join(", ")];
  });
  if (new Set(lines.map(([, line]) => line)).size === 1) return [lines[0][1]];
  return lines.map(([direction, line]) => `${direction}: ${line}`);
}

function gmacs(macs) {
  return `${(macs / 1e9).toFixed(1)} G`;
}

function distillationText(d) {
  const teacher = d.teacher.name ?? "an unnamed teacher";
  const kind = d.teacher.kind === "run" ? " (training run)" : "";
  const cost = d.macs_ratio
    ? `${d.macs_ratio.toFixed(1)}× fewer MACs (${gmacs(d.macs)} per 256x256, teacher ${gmacs(d.teacher_macs)})`
    : `${gmacs(d.macs)} MACs per 256x256`;
  const scores = Object.entries(d.fidelity).map(
    ([direction, f]) =>
      `${direction} ${f.psnr_db.toFixed(1)} dB (identity ${f.identity_psnr_db.toFixed(1)} dB, ${f.images} images)`,
  );
  const fidelity = scores.length ? `fidelity ${scores.join(", ")}` : "fidelity not measured";
  return [`Distilled from ${teacher}${kind}${sha(Object.values(d.teacher.sha256)[0])}: ${cost}, ${fidelity}`];
}

function tilingText(model) {
  const kinds = new Set(model.directions.map((d) => d.tiling));
  if (kinds.size === 1) return `Large images: ${TILING[[...kinds][0]]}.`;
  return model.directions.map((d) => `${d.name}: ${TILING[d.tiling]}`).join("; ");
}

function row(list, term, lines) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  list.append(dt);
  for (const line of lines) {
    const dd = document.createElement("dd");
    dd.textContent = line; // names and descriptions come from whoever published the model
    list.append(dd);
  }
}

function showModelInfo(model) {
  modelInfo.querySelector(".description").textContent = model.description ?? "";
  const list = modelInfo.querySelector("dl");
  list.replaceChildren();
  const p = model.provenance;
  if (p && p.kind === "trained") row(list, "Source", trainedText(p));
  else if (p && p.kind === "imported") row(list, "Source", importedText(p, model));
  else row(list, "Source", ["not recorded"]);
  if (model.distillation) row(list, "Student", distillationText(model.distillation));
  if (model.architecture && !(p && p.kind === "imported")) {
    const a = model.architecture;
    row(list, "Network", [`${a.generator}, ngf ${a.ngf}, norm ${a.norm}`]);
  }
  row(list, "License", [model.license ?? "not stated"]);
  row(list, "Tiling", [tilingText(model)]);
  modelInfo.hidden = false;
}

/** Files dropped on `zone` go to `onFiles`; the zone shows when something is dragged over it. */
function dropZone(zone, onFiles) {
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    zone.addEventListener(type, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    onFiles(event.dataTransfer.files);
  });
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

// --- example photos: real photos the server ships, one click each ------------------------------

const examples = $("#examples");

async function loadExamples() {
  let list;
  try {
    const response = await fetch("/examples");
    if (!response.ok) return;
    list = (await response.json()).examples;
  } catch (_) {
    return; // no examples: the drop zone is enough
  }
  const buttons = list.map((example) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.dataset.name = example.name;
    button.title = `${example.title}, ${example.width}×${example.height}`;
    const thumbnail = document.createElement("img");
    thumbnail.src = example.url;
    thumbnail.alt = "";
    const label = document.createElement("span");
    label.textContent = example.name;
    button.append(thumbnail, label);
    button.addEventListener("click", () => tryExample(example));
    return button;
  });
  examples.querySelector(".example-list").replaceChildren(...buttons);
  examples.hidden = buttons.length === 0;
}

async function tryExample(example) {
  const response = await fetch(example.url);
  if (!response.ok) {
    setStatus(`cannot load the example: ${await errorMessage(response)}`, true);
    return;
  }
  const blob = await response.blob();
  addFiles([new File([blob], `${example.name}.png`, { type: "image/png" })]);
}

const fullSize = $("#full-size");
fullSize.addEventListener("change", () => results.classList.toggle("full", fullSize.checked));
results.classList.toggle("full", fullSize.checked);

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
dropZone(drop, addFiles);
// --- tabs ------------------------------------------------------------------------------------

const tabs = [...document.querySelectorAll('[role="tab"]')];

function showTab(chosen) {
  for (const tab of tabs) {
    const selected = tab === chosen;
    tab.setAttribute("aria-selected", String(selected));
    document.getElementById(tab.getAttribute("aria-controls")).hidden = !selected;
  }
}

for (const tab of tabs) tab.addEventListener("click", () => showTab(tab));

// --- bulk jobs -------------------------------------------------------------------------------

const POLL_MS = 500;
const FINISHED = new Set(["succeeded", "partially_failed", "failed", "cancelled"]);
const ARCHIVE = /\.(zip|tar|tgz|tar\.gz|tbz2|tar\.bz2|txz|tar\.xz)$/i;
const bulkForm = $("#bulk-form");
const bulkFiles = $("#bulk-files");
const bulkDrop = $("#bulk-drop");
const bulkChosen = $("#bulk-chosen");
const bulkSubmit = $("#bulk-submit");
const jobView = $("#bulk-job");
const cancelButton = $("#bulk-cancel");
const downloadButton = $("#bulk-download");
const errorTable = $("#bulk-errors");

let bulkSelection = [];
let job = null; // the JobView the server last sent
let polling = null;

function chooseBulkFiles(files) {
  bulkSelection = [...files];
  const archives = bulkSelection.filter((f) => ARCHIVE.test(f.name)).length;
  bulkChosen.textContent = bulkSelection.length
    ? `${bulkSelection.length} file${bulkSelection.length > 1 ? "s" : ""} chosen` +
      (archives ? ` (${archives} archive${archives > 1 ? "s" : ""})` : "")
    : "Drop an archive or images here, or choose files";
}

function bulkBody() {
  const archives = bulkSelection.filter((f) => ARCHIVE.test(f.name));
  if (archives.length > 1) {
    throw new Error("Send one archive at most (images may go beside it).");
  }
  const form = new FormData();
  form.append("model", modelSelect.value);
  form.append("direction", directionSelect.value);
  form.append("format", formatSelect.value);
  // one job: the archive's images and the others chosen with it
  for (const file of bulkSelection) {
    form.append(archives.includes(file) ? "archive" : "files", file, file.name);
  }
  return form;
}

async function submitJob(event) {
  event.preventDefault();
  if (!modelSelect.value || directionSelect.disabled) return setStatus("Pick a model first.", true);
  if (!bulkSelection.length) return setStatus("Choose an archive or some images first.", true);
  let body;
  try {
    body = bulkBody();
  } catch (error) {
    return setStatus(error.message, true);
  }
  bulkSubmit.disabled = true;
  setStatus("Uploading…");
  try {
    const response = await fetch("/v1/jobs", { method: "POST", body, headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    showJob(await response.json());
    setStatus(`Job ${job.id} submitted: ${job.counts.total} image(s).`);
    poll();
  } catch (error) {
    setStatus(`The job was not accepted: ${error.message}`, true);
  } finally {
    bulkSubmit.disabled = false;
  }
}

function describeRate(view) {
  const parts = [];
  if (view.throughput) parts.push(`${view.throughput.toFixed(1)} images/s`);
  if (view.eta_seconds && !FINISHED.has(view.state)) parts.push(`about ${Math.ceil(view.eta_seconds)} s left`);
  return parts.length ? ` · ${parts.join(" · ")}` : "";
}

function showJob(view) {
  job = view;
  jobView.hidden = false;
  $("#bulk-id").textContent = view.id;
  const state = $("#bulk-state");
  state.textContent = view.state;
  state.dataset.state = view.state;
  const progress = $("#bulk-progress");
  progress.value = view.progress;
  progress.textContent = `${Math.round(view.progress * 100)}%`;
  const { total, done, failed } = view.counts;
  const frames = view.frames_done ? `, ${view.frames_done} video frames translated` : "";
  $("#bulk-counts").textContent =
    `${done} of ${total} converted, ${failed} failed${frames}${describeRate(view)}`;
  const finished = FINISHED.has(view.state);
  cancelButton.disabled = finished;
  downloadButton.disabled = !finished || done === 0;
  const rows = view.errors.map((problem) => {
    const row = document.createElement("tr");
    for (const text of [problem.item, problem.error]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  });
  errorTable.tBodies[0].replaceChildren(...rows);
  errorTable.hidden = rows.length === 0;
}

function poll() {
  clearTimeout(polling);
  polling = setTimeout(async () => {
    const id = job.id;
    try {
      const response = await fetch(`/v1/jobs/${encodeURIComponent(id)}`, { headers: headers() });
      if (!response.ok) throw new Error(await errorMessage(response));
      const view = await response.json();
      if (job.id !== id) return; // another job was submitted meanwhile
      showJob(view);
      if (FINISHED.has(view.state)) {
        setStatus(`Job ${id} ${view.state.replace("_", " ")}.`, view.state !== "succeeded");
        return;
      }
    } catch (error) {
      setStatus(`Cannot follow the job (retrying): ${error.message}`, true);
    }
    poll();
  }, POLL_MS);
}

async function cancelJob() {
  cancelButton.disabled = true;
  try {
    const response = await fetch(`/v1/jobs/${encodeURIComponent(job.id)}/cancel`, {
      method: "POST",
      headers: headers(),
    });
    if (!response.ok) throw new Error(await errorMessage(response));
    showJob(await response.json());
    setStatus(`Job ${job.id} cancelled; the images already converted are kept.`);
  } catch (error) {
    setStatus(`Cannot cancel: ${error.message}`, true);
    cancelButton.disabled = false;
  }
}

async function downloadResult() {
  // fetched, not linked, so the API key goes with it
  try {
    const response = await fetch(job.result_url, { headers: headers() });
    if (!response.ok) throw new Error(await errorMessage(response));
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `job-${job.id}.zip`;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  } catch (error) {
    setStatus(`Cannot download the results: ${error.message}`, true);
  }
}

bulkForm.addEventListener("submit", submitJob);
bulkFiles.addEventListener("change", () => chooseBulkFiles(bulkFiles.files));
cancelButton.addEventListener("click", cancelJob);
downloadButton.addEventListener("click", downloadResult);
dropZone(bulkDrop, chooseBulkFiles);

loadModels();
loadExamples();
