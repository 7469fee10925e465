// The latentdiff web page: plain JS, no build step. Talks to the /v1 API with fetch (so a
// bearer token can be sent, which <img> and EventSource cannot) and reads server-sent events
// from a streamed response.
"use strict";

const $ = (id) => document.getElementById(id);
let currentJob = null;
let initImage = null; // data: URL of the picture img2img starts from, or null for text to image
let controlImage = null; // data: URL of the control unit's picture, or null for no control
let promptImage = null; // data: URL of the image prompt's picture (IP-Adapter), or null for none
const MAX_SIDE = 1024; // a larger picture is brought to this size unless width/height are given

// A token may come in the URL fragment (never sent to the server): /#token=T
if (location.hash.startsWith("#token=")) {
  localStorage.setItem("latentdiff-token", decodeURIComponent(location.hash.slice(7)));
  history.replaceState(null, "", location.pathname);
}

function headers(extra = {}) {
  const token = localStorage.getItem("latentdiff-token");
  return token ? { ...extra, Authorization: "Bearer " + token } : extra;
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (res.status === 401) {
    $("token-box").hidden = false;
    throw new Error("this server needs a token: enter it below");
  }
  if (!res.ok) {
    const body = await res.json().catch(() => ({}));
    const retry = res.headers.get("Retry-After");
    throw new Error((body.error || res.statusText) + (retry ? ` (retry in ${retry} s)` : ""));
  }
  return res;
}

async function imageUrl(path) {
  const res = await api(path);
  return URL.createObjectURL(await res.blob());
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function numberOrNull(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function formParams() {
  return {
    prompt: $("prompt").value,
    negative_prompt: $("negative").value,
    width: numberOrNull("width"), height: numberOrNull("height"),
    steps: numberOrNull("steps"), guidance: numberOrNull("guidance"),
    scheduler: $("sampler").value || null, seed: numberOrNull("seed"),
    num_images: numberOrNull("num_images") || 1,
    model: $("lora").value || $("model").value || null,
    ...(initImage ? { init_image: initImage, strength: Number($("strength").value) } : {}),
    ...(controlImage ? { controls: [controlUnit()] } : {}),
    ...(promptImage ? { image_prompts: [imagePrompt()] } : {}),
  };
}

// One image prompt (GET /v1/controls lists the server's IP-Adapters as `ip_adapters`).
function imagePrompt() {
  return { image: promptImage, adapter: $("ip_adapter").value, scale: numberOrNull("ip_scale") ?? 1 };
}

// One control unit (GET /v1/controls lists the models and preprocessors the server has).
function controlUnit() {
  return {
    image: controlImage, model: $("control_model").value, module: $("control_module").value,
    weight: numberOrNull("control_weight") ?? 1,
  };
}

function readPicture(file, then) {
  if (!file || !file.type.startsWith("image/")) return setStatus("that is not an image file", true);
  const reader = new FileReader();
  reader.onload = () => then(reader.result);
  reader.readAsDataURL(file);
}

function useControlImage(file) {
  readPicture(file, (url) => {
    controlImage = url;
    $("control_preview").src = url;
    $("control_preview").hidden = false;
  });
}

function clearControl() {
  controlImage = null;
  $("control_file").value = "";
  $("control_preview").hidden = true;
}

function usePromptImage(file) {
  readPicture(file, (url) => {
    promptImage = url;
    $("ip_preview").src = url;
    $("ip_preview").hidden = false;
  });
}

function clearPrompt() {
  promptImage = null;
  $("ip_file").value = "";
  $("ip_preview").hidden = true;
}

async function loadControls() {
  const { models, modules, ip_adapters } = await (await api("/v1/controls")).json();
  for (const m of models) $("control_model").append(new Option(m.title, m.title));
  for (const name of modules) $("control_module").append(new Option(name, name));
  $("control-box").hidden = models.length === 0;
  // named by file: `name [hash]` may name both the .safetensors and the .bin of one adapter
  for (const m of ip_adapters || []) $("ip_adapter").append(new Option(m.title, m.file));
  $("ip-box").hidden = !(ip_adapters || []).length;
}

// img2img: a picture chosen with the file input or dropped on the page, sent as a data: URL.
function useInitImage(file) {
  readPicture(file, (url) => {
    initImage = url;
    const pic = $("init_preview");
    pic.onload = () => fitSize(pic.naturalWidth, pic.naturalHeight);
    pic.src = initImage;
    $("init-box").hidden = false;
    $("generate").textContent = "Generate from picture";
  });
}

function fitSize(w, h) {
  if ($("width").value || $("height").value || Math.max(w, h) <= MAX_SIDE) return;
  const k = MAX_SIDE / Math.max(w, h);
  $("width").value = Math.max(8, Math.round((w * k) / 8) * 8);
  $("height").value = Math.max(8, Math.round((h * k) / 8) * 8);
}

function clearInitImage() {
  initImage = null;
  $("init_file").value = "";
  $("init-box").hidden = true;
  $("generate").textContent = "Generate";
}

function acceptDrops() {
  const body = document.body;
  body.addEventListener("dragover", (e) => { e.preventDefault(); body.classList.add("dragging"); });
  body.addEventListener("dragleave", () => body.classList.remove("dragging"));
  body.addEventListener("drop", (e) => {
    e.preventDefault();
    body.classList.remove("dragging");
    useInitImage(e.dataTransfer.files[0]);
  });
}

function useParams(p) {
  $("prompt").value = p.prompt || "";
  $("negative").value = p.negative_prompt || "";
  for (const k of ["width", "height", "steps", "guidance", "seed"]) $(k).value = p[k] ?? "";
  $("sampler").value = p.scheduler || "";
  $("num_images").value = 1;
  window.scrollTo(0, 0);
}

async function addToGallery(img, atStart = true) {
  const card = document.createElement("div");
  card.className = "card";
  const p = img.params || {};
  const pic = document.createElement("img");
  pic.alt = p.prompt || img.name;
  const text = document.createElement("pre");
  text.textContent = `${p.prompt}\n${p.width}x${p.height}, ${p.steps} steps, guidance ${p.guidance}, ` +
    `seed ${p.seed}, ${p.scheduler || p.scheduler_class}` + (p.init_image_hash ? `, from a picture, strength ${p.strength}` : "") +
    (p.controls || []).map((c) => `, control ${c.model_name} (${c.module}, weight ${c.weight})`).join("");
  const again = document.createElement("button");
  again.type = "button";
  again.textContent = "Use these parameters";
  again.onclick = () => useParams(p);
  card.append(pic, text, again);
  atStart ? $("gallery").prepend(card) : $("gallery").append(card);
  pic.src = await imageUrl(img.url);
}

// Server-sent events over fetch: split the stream into "event:/data:" blocks.
async function follow(jobId) {
  const res = await api(`/v1/jobs/${jobId}/events`);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const event = /^event: (.*)$/m.exec(block);
      const data = /^data: (.*)$/m.exec(block);
      if (event && data) await onEvent(event[1], JSON.parse(data[1]));
    }
  }
}

async function onEvent(type, d) {
  if (type === "progress") {
    $("progress").value = d.progress;
    setStatus(d.state === "queued" ? `queued, position ${d.position}` : `step ${d.step} / ${d.total_steps}`);
    if (d.preview) { $("preview").src = d.preview; $("preview").hidden = false; }
  } else if (type === "image") {
    await addToGallery(d);
  } else {
    $("progress").value = type === "done" ? 1 : $("progress").value;
    setStatus(type === "failed" ? `failed: ${d.error}` : type, type === "failed");
  }
}

async function submit(ev) {
  ev.preventDefault();
  $("generate").disabled = true;
  $("cancel").disabled = false;
  $("progress").value = 0;
  try {
    const res = await api("/v1/generate", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(formParams()),
    });
    currentJob = (await res.json()).id;
    setStatus("queued");
    await follow(currentJob);
  } catch (e) {
    setStatus(e.message, true);
  } finally {
    currentJob = null;
    $("generate").disabled = false;
    $("cancel").disabled = true;
  }
}

async function cancel() {
  if (currentJob) await api(`/v1/jobs/${currentJob}`, { method: "DELETE" }).catch((e) => setStatus(e.message, true));
}

async function loadModels() {
  const { models, default: def } = await (await api("/v1/models")).json();
  for (const m of models) {
    const opt = new Option(m.name + (m.default ? " (default)" : ""), m.default ? "" : m.name);
    (m.kind === "lora" ? $("lora") : $("model")).append(opt);
  }
  $("health").textContent = `default model: ${def}`;
}

async function loadSchedulers() {
  // The server's one scheduler table (GET /v1/schedulers), not a copy kept here.
  const { schedulers } = await (await api("/v1/schedulers")).json();
  for (const s of schedulers) $("sampler").append(new Option(`${s.name} (${s.a1111})`, s.name));
}

async function start() {
  $("form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("init_file").addEventListener("change", () => useInitImage($("init_file").files[0]));
  $("clear_init").addEventListener("click", clearInitImage);
  $("control_file").addEventListener("change", () => useControlImage($("control_file").files[0]));
  $("clear_control").addEventListener("click", clearControl);
  $("ip_file").addEventListener("change", () => usePromptImage($("ip_file").files[0]));
  $("clear_ip").addEventListener("click", clearPrompt);
  $("strength").addEventListener("input", () => { $("strength_value").value = $("strength").value; });
  acceptDrops();
  $("token").addEventListener("change", () => {
    localStorage.setItem("latentdiff-token", $("token").value);
    location.reload();
  });
  try {
    await loadSchedulers();
    await loadModels();
    await loadControls();
    const { images } = await (await api("/v1/images?limit=24")).json();
    for (const img of images) await addToGallery(img, false);
  } catch (e) {
    setStatus(e.message, true);
  }
}

start();
