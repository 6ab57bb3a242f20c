// The page: send a photo or a drawing to POST /v1/predict and show the answer.
"use strict";

const $ = (id) => document.getElementById(id);
let topK = 5;
let pending = null; // the request in flight; a newer image aborts it

// ---------------------------------------------------------------- the model line
async function loadModel() {
  try {
    const res = await fetch("/v1/model");
    const m = await res.json();
    topK = Math.min(5, m.classes.length);
    const parts = [m.model, `${m.classes.length} classes`, `${Number(m.params).toLocaleString("en")} parameters`];
    if (m.metrics && m.metrics.test_accuracy != null) {
      parts.push(`test accuracy ${(100 * m.metrics.test_accuracy).toFixed(1)}%`);
    }
    $("model-line").textContent = parts.join(" \u00b7 ");
    describeInput(m);
  } catch (err) {
    $("model-line").textContent = "The model description could not be loaded.";
  }
}

// "What the model saw": this model's preprocessing in words, and its input drawn at its own aspect ratio
function describeInput(m) {
  const [h, w] = m.input_shape;
  const colour = m.preprocessing && m.preprocessing.channels === 3;
  if (m.preprocessing_description) $("seen-how").textContent = `: ${m.preprocessing_description}`;
  const img = $("model-input");
  img.alt = `The ${h} by ${w} ${colour ? "colour" : "grey"} image the model classified`;
  const scale = 112 / Math.max(h, w); // the longer side 112 CSS pixels, as the square default
  img.style.width = `${Math.round(w * scale)}px`;
  img.style.height = `${Math.round(h * scale)}px`;
}

// ---------------------------------------------------------------- predicting
async function predict(blob, name) {
  if (pending) pending.abort();
  const controller = new AbortController();
  pending = controller;
  const form = new FormData();
  form.append("file", blob, name);
  $("status").textContent = "Classifying\u2026";
  $("error").hidden = true;
  try {
    const res = await fetch(`/v1/predict?top_k=${topK}&image=true`, { method: "POST", body: form, signal: controller.signal });
    const body = await res.json();
    if (!res.ok) throw new Error(typeof body.detail === "string" ? body.detail : `the server answered ${res.status}`);
    show(body);
  } catch (err) {
    if (err.name === "AbortError") return;
    $("result").hidden = true;
    $("status").textContent = "";
    $("error").textContent = `Could not classify this image: ${err.message}`;
    $("error").hidden = false;
  } finally {
    if (pending === controller) pending = null;
  }
}

function show(r) {
  $("status").textContent = "";
  $("result-class").textContent = r.class;
  $("result-prob").textContent = `${(100 * r.probability).toFixed(1)}%`;
  $("unsure").hidden = !r.unsure;
  $("unsure").textContent = r.unsure ? `Unsure: ${r.reason}.` : "";
  const bars = $("bars");
  bars.replaceChildren(...r.top.map((t) => {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = t.class;
    name.title = t.class;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${(100 * t.probability).toFixed(1)}%`;
    track.append(fill);
    const pct = document.createElement("span");
    pct.className = "pct";
    pct.textContent = `${(100 * t.probability).toFixed(1)}%`;
    li.append(name, track, pct);
    li.setAttribute("aria-label", `${t.class}: ${(100 * t.probability).toFixed(1)} percent`);
    return li;
  }));
  $("model-input").src = r.image;
  $("result").hidden = false;
}

// ---------------------------------------------------------------- photos: choose, drop, paste
function usePhoto(file) {
  if (!file) return;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  $("drop-text").hidden = true;
  $("again").hidden = false;
  predict(file, file.name || "pasted-image").then(() => {
    // on a phone the answer is below the photo: bring it into view
    if (window.matchMedia("(max-width: 720px)").matches) $("result-title").scrollIntoView({ behavior: "smooth" });
  });
}

function setupUpload() {
  const drop = $("drop");
  $("file").addEventListener("change", (e) => usePhoto(e.target.files[0]));
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    selectTab("upload");
    usePhoto(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
    if (item) { selectTab("upload"); usePhoto(item.getAsFile()); }
  });
}

// ---------------------------------------------------------------- drawing: mouse, pen or finger
function setupCanvas() {
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  let drawing = false;
  let drawn = false;
  let last = null;

  const clear = () => {
    ctx.fillStyle = "#ffffff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    drawn = false;
  };
  const point = (e) => {
    const box = canvas.getBoundingClientRect();
    return [(e.clientX - box.left) * canvas.width / box.width, (e.clientY - box.top) * canvas.height / box.height];
  };
  const line = (to) => {
    ctx.strokeStyle = "#111111";
    ctx.fillStyle = "#111111";
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = Number($("brush").value) * canvas.width / 420;
    ctx.beginPath();
    ctx.moveTo(...(last || to));
    ctx.lineTo(...to);
    ctx.stroke();
    last = to;
    drawn = true;
  };

  canvas.addEventListener("pointerdown", (e) => {
    e.preventDefault();
    canvas.setPointerCapture(e.pointerId);
    drawing = true;
    last = null;
    line(point(e));
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    for (const ev of (e.getCoalescedEvents ? e.getCoalescedEvents() : [e])) line(point(ev));
  });
  const end = () => {
    if (!drawing) return;
    drawing = false;
    last = null;
    if (drawn) canvas.toBlob((blob) => predict(blob, "drawing.png"), "image/png");
  };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointercancel", end);
  $("clear").addEventListener("click", () => {
    clear();
    $("result").hidden = true;
    $("status").textContent = "Draw a garment.";
  });
  clear();
}

// ---------------------------------------------------------------- tabs
function selectTab(which) {
  for (const name of ["upload", "draw"]) {
    const on = name === which;
    $(`tab-${name}`).setAttribute("aria-selected", String(on));
    $(`tab-${name}`).tabIndex = on ? 0 : -1;
    $(`panel-${name}`).hidden = !on;
  }
}

function setupTabs() {
  $("tab-upload").addEventListener("click", () => selectTab("upload"));
  $("tab-draw").addEventListener("click", () => selectTab("draw"));
  for (const id of ["tab-upload", "tab-draw"]) {
    $(id).addEventListener("keydown", (e) => {
      if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
      const next = id === "tab-upload" ? "draw" : "upload";
      selectTab(next);
      $(`tab-${next}`).focus();
    });
  }
}

setupTabs();
setupUpload();
setupCanvas();
loadModel();
