// The web page of the protonet service: draw or drop symbols (or type texts, for a collection
// of a text model), add them to a collection as labelled examples, classify new ones. Plain
// JavaScript, no dependencies, no build step; it talks only to the public HTTP API
// (docs/service.md), with the API key (when auth is on) kept in sessionStorage: this tab only,
// gone when it closes.
"use strict";

const KEY_ITEM = "protonet.apiKey";
const COLLECTION_ITEM = "protonet.collection";
const $ = (id) => document.getElementById(id);

const state = {
  collection: null, // the selected collection's name
  models: new Map(), // served model name -> its summary in GET /v1/models
  collectionModels: new Map(), // collection name -> the name of the model it is bound to
  model: null, // the selected collection's model: what the input panel offers
  revisions: new Map(), // collection -> revision of this page's last write (read-your-writes)
  thumbnails: new Map(), // "collection|id|label" -> Promise of an object URL
  drops: [], // dropped image files, as data URLs
  drawn: false, // whether the pad has ink on it
  job: null, // the adaptation job this page follows: {name, id}
};

// ---------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, kind, detail) {
    super(detail);
    this.status = status;
    this.kind = kind;
  }
}

/** The error of a failed response: the API's own message (its JSON body's "detail"). */
async function errorOf(response) {
  const fallback = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && typeof body.detail === "string") {
      return new ApiError(response.status, body.error || "http_error", body.detail);
    }
  } catch (_) {
    // not JSON (a proxy's error page): the status line is all there is
  }
  return new ApiError(response.status, "http_error", fallback || "request failed");
}

/**
 * One API call. `body` is sent as JSON; the answer is parsed JSON (null for 204), or a Blob
 * with `{binary: true}`. `writes` (a collection name) records the revision the write made, and
 * `reads` sends it back as min_revision, so a replica that has not applied it yet catches up.
 */
async function api(method, path, body, { binary = false, writes = null, reads = null } = {}) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_ITEM);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const revision = reads && state.revisions.get(reads);
  const url = revision ? `${path}${path.includes("?") ? "&" : "?"}min_revision=${revision}` : path;
  let response;
  try {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    response = await fetch(url, { method, headers, body: payload });
  } catch (error) {
    throw new ApiError(0, "network", `the request did not reach the service: ${error.message}`);
  }
  if (!response.ok) throw await errorOf(response);
  const written = response.headers.get("Protonet-Revision");
  if (writes && written) state.revisions.set(writes, Number(written));
  if (response.status === 204) return null;
  return binary ? response.blob() : response.json();
}

/** Every item of a paged listing (a collection's classes or examples), following next_cursor. */
async function allPages(path, key, options = {}) {
  const items = [];
  let cursor = null;
  do {
    const after = cursor ? `&cursor=${encodeURIComponent(cursor)}` : "";
    const page = await api("GET", `${path}?limit=1000${after}`, undefined, options);
    items.push(...page[key]);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

const collectionPath = (name, ...rest) =>
  ["/v1/collections", encodeURIComponent(name), ...rest].join("/");
// Each "." encoded too, so that no label is read as the path segment "." or "..".
const labelSegment = (label) => encodeURIComponent(label).replace(/\./g, "%2E");

// ---------------------------------------------------------------------------------------------
// Messages: every failure shows the API's message (never a blank page)

function say(text, kind = "info") {
  const message = $("message");
  message.textContent = text;
  message.className = kind;
  message.hidden = false;
}

function quiet() {
  $("message").hidden = true;
}

function fail(error) {
  if (error instanceof ApiError && error.status === 401) {
    askForKey(error.message);
    return;
  }
  const status = error instanceof ApiError && error.status ? ` (HTTP ${error.status})` : "";
  say(`${error.message || error}${status}`, "error");
}

/** `handler` as an event listener whose failures are shown. */
const guarded = (handler) => (event) => {
  Promise.resolve()
    .then(() => handler(event))
    .catch(fail);
};

window.addEventListener("error", (event) => fail(event.error || event.message));
window.addEventListener("unhandledrejection", (event) => fail(event.reason));

// ---------------------------------------------------------------------------------------------
// API key (auth on)

function askForKey(detail) {
  $("app").hidden = true;
  $("key-form").hidden = false;
  $("forget-key").hidden = !sessionStorage.getItem(KEY_ITEM);
  say(detail, "error");
  $("key-input").focus();
}

async function useKey(event) {
  event.preventDefault();
  sessionStorage.setItem(KEY_ITEM, $("key-input").value.trim());
  $("key-input").value = "";
  await start();
}

function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
  state.thumbnails.clear();
  askForKey("API key forgotten: enter one to go on.");
}

// ---------------------------------------------------------------------------------------------
// Start, collections

async function start() {
  // Every served model, not just the default one (GET /v1/model): each collection is bound to
  // one, and its modality, input size and calibration are that model's.
  const { models } = await api("GET", "/v1/models");
  state.models = new Map(models.map((model) => [model.name, model]));
  const choice = $("create-model");
  choice.replaceChildren(...models.map((model) =>
    new Option(`${model.name} (${model.modality})`, model.name, model.default, model.default)));
  choice.hidden = models.length < 2; // nothing to choose
  $("key-form").hidden = true;
  $("app").hidden = false;
  $("forget-key").hidden = !sessionStorage.getItem(KEY_ITEM);
  quiet();
  await loadCollections(sessionStorage.getItem(COLLECTION_ITEM));
}

async function loadCollections(wanted) {
  const { collections } = await api("GET", "/v1/collections");
  state.collectionModels = new Map(collections.map((c) => [c.name, c.model]));
  const select = $("collection-select");
  select.replaceChildren(...collections.map((c) => new Option(collectionText(c), c.name)));
  if (!collections.length) select.append(new Option("no collections yet: create one", ""));
  const names = collections.map((c) => c.name);
  await selectCollection(names.includes(wanted) ? wanted : names[0] || null);
}

/** "name (n classes)", with the collection's model where the service serves several. */
function collectionText(summary) {
  const model = state.models.size > 1 && summary.model ? `${summary.model}, ` : "";
  return `${summary.name} (${model}${summary.n_classes} classes)`;
}

async function selectCollection(name) {
  state.collection = name;
  $("collection-select").value = name || "";
  if (name) sessionStorage.setItem(COLLECTION_ITEM, name);
  const bound = state.models.get(state.collectionModels.get(name));
  useModel(bound || [...state.models.values()].find((model) => model.default));
  $("results").replaceChildren(note(words().start));
  state.job = null; // a job of another collection is no longer shown
  showJob(null);
  await refresh();
  if (name) await resumeJob(name);
}

async function createCollection(event) {
  event.preventDefault();
  const name = $("create-name").value.trim();
  const model = $("create-model").value;
  await api("POST", "/v1/collections", { name, model }, { writes: name });
  $("create-name").value = "";
  say(`Created collection "${name}".`);
  await loadCollections(name);
}

// ---------------------------------------------------------------------------------------------
// The input panel, by the modality of the selected collection's model

const WORDS = {
  image: {
    heading: "Draw, or drop images",
    label: "label, e.g. ring",
    start: "Draw a symbol and press Classify.",
    missing: "Draw a symbol on the pad (or drop image files) first.",
    noClasses: "No classes yet: draw a symbol, give it a label, add it.",
  },
  text: {
    heading: "Type texts, one per line",
    label: "label, e.g. card_arrival",
    start: "Type a text and press Classify.",
    missing: "Type a text first (one per line).",
    noClasses: "No classes yet: type some texts, give them a label, add them.",
  },
};
const isText = () => Boolean(state.model && state.model.modality === "text");
const words = () => WORDS[isText() ? "text" : "image"];

/** Offer what `model` takes: the pad and drop zone for images, a textarea for texts. */
function useModel(model) {
  state.model = model;
  const text = isText();
  for (const id of ["pad", "drop-hint"]) $(id).hidden = text;
  $("text-input").hidden = !text;
  showDrops(); // kept for when an image collection is picked again, but not shown meanwhile
  $("input-heading").textContent = words().heading;
  $("label").placeholder = words().label;
  const accepts = text
    ? `texts of up to ${model.text.max_chars} characters`
    : `inputs ${model.input.image_size}×${model.input.image_size} ` +
      (model.input.channels === 1 ? "grayscale" : "RGB");
  $("model").textContent = `model ${model.name} ${model.version} · ${accepts}`;
  // Rejection of unknowns: offered when this model has a calibration.
  $("rejection-choice").hidden = !model.rejection;
}

// ---------------------------------------------------------------------------------------------
// Classes, thumbnails, diagnostics

async function refresh() {
  const name = state.collection;
  if (!name) {
    $("classes").replaceChildren(note("Create a collection to start."));
    $("diagnostics").hidden = true;
    $("adaptation").hidden = true;
    return;
  }
  const [detail, classes, examples, diagnostics] = await Promise.all([
    api("GET", collectionPath(name), undefined, { reads: name }),
    allPages(collectionPath(name, "classes"), "classes", { reads: name }),
    allPages(collectionPath(name, "examples"), "examples"),
    loadDiagnostics(name),
  ]);
  if (name !== state.collection) return; // another collection was picked meanwhile
  const option = [...$("collection-select").options].find((each) => each.value === name);
  if (option) option.text = collectionText(detail);
  showClasses(detail, classes, examples, diagnostics);
  showDiagnostics(diagnostics);
  showAdapter(detail);
}

/** The collection's diagnostics, or null where the service has none (404/405: older). */
async function loadDiagnostics(name) {
  try {
    return await api("GET", collectionPath(name, "diagnostics"), undefined, { reads: name });
  } catch (error) {
    if (error instanceof ApiError && (error.status === 404 || error.status === 405)) return null;
    return { error: error.message };
  }
}

function showClasses(detail, classes, examples, diagnostics) {
  const suspects = new Map();
  for (const entry of (diagnostics && diagnostics.suspected_mislabelled) || []) {
    suspects.set(entry.example_id, entry);
  }
  const perClass = new Map(((diagnostics && diagnostics.classes) || []).map((c) => [c.label, c]));
  const cards = classes.map((summary) => {
    const own = examples.filter((example) => example.label === summary.label);
    return classCard(summary, own, suspects, perClass.get(summary.label));
  });
  const rejection = detail.rejection && detail.rejection.mode === "calibrated"
    ? [note(`Unknowns are rejected (acceptance ${detail.rejection.acceptance}).`)]
    : [];
  $("classes").replaceChildren(
    ...rejection,
    ...(cards.length ? cards : [note(words().noClasses)]),
  );
}

function classCard(summary, examples, suspects, diagnosis) {
  const card = element("article", "class-card");
  card.dataset.label = summary.label;
  const heading = element("h3", "", summary.label);
  const count = element("span", "subtle", ` ${summary.n_examples} example(s)`);
  heading.append(count);
  const remove = element("button", "danger", "Delete class");
  remove.type = "button";
  remove.addEventListener("click", guarded(() => deleteClass(summary.label, summary.n_examples)));
  const header = element("header", "");
  header.append(heading, remove);
  card.append(header);
  if (diagnosis) card.append(element("p", "subtle", describeClass(diagnosis)));
  const strip = element("div", "thumbnails");
  strip.append(...examples.map((example) => thumbnail(example, suspects.get(example.id))));
  card.append(strip);
  return card;
}

function describeClass(diagnosis) {
  const parts = [];
  if (diagnosis.loo_accuracy !== null && diagnosis.loo_accuracy !== undefined) {
    parts.push(`leave-one-out accuracy ${percent(diagnosis.loo_accuracy)}`);
  }
  if (diagnosis.nearest_class) {
    const distance = number(diagnosis.nearest_class_distance);
    parts.push(`nearest class ${diagnosis.nearest_class} (${distance})`);
  }
  return parts.join(" · ");
}

function thumbnail(example, suspect) {
  const figure = element("figure", suspect ? "thumb suspect" : "thumb");
  figure.dataset.exampleId = String(example.id);
  if (example.text != null) {
    // A text model's example has no image: its stored (cleaned) text stands in.
    figure.classList.add("text");
    figure.append(element("span", "", example.text));
    figure.title = suspect
      ? `example ${example.id}: labelled "${suspect.label}" but closer to "${suspect.closer_to}"`
      : `example ${example.id}`;
    return figure;
  }
  const image = document.createElement("img");
  image.alt = `example ${example.id} of ${example.label}`;
  figure.title = suspect
    ? `example ${example.id}: labelled "${suspect.label}" but closer to "${suspect.closer_to}" ` +
      `(${number(suspect.distance_own)} vs ${number(suspect.distance_other)})`
    : `example ${example.id}`;
  figure.append(image);
  thumbnailUrl(state.collection, example).then(
    (url) => { image.src = url; },
    (error) => {
      figure.classList.add("broken");
      figure.title = `example ${example.id}: ${error.message}`;
    },
  );
  return figure;
}

/** An object URL of the example's image, fetched once (the fetch carries the API key). */
function thumbnailUrl(name, example) {
  const key = `${name}|${example.id}|${example.label}`;
  if (!state.thumbnails.has(key)) {
    const path = collectionPath(name, "examples", String(example.id), "image");
    const blob = api("GET", path, undefined, { binary: true });
    const url = blob.then((image) => URL.createObjectURL(image));
    url.catch(() => state.thumbnails.delete(key)); // retried on the next refresh
    state.thumbnails.set(key, url);
  }
  return state.thumbnails.get(key);
}

function showDiagnostics(diagnostics) {
  const panel = $("diagnostics");
  panel.hidden = !diagnostics;
  if (!diagnostics) return;
  const body = $("diagnostics-body");
  if (diagnostics.error) {
    body.replaceChildren(element("p", "error", `Diagnostics unavailable: ${diagnostics.error}`));
    return;
  }
  const accuracy = diagnostics.expected_accuracy === null
    ? "Expected accuracy: needs a class with 2 or more examples."
    : `Expected accuracy (leave-one-out): ${percent(diagnostics.expected_accuracy)}`;
  const pairs = element("ul", "pairs");
  for (const pair of diagnostics.confusable_pairs) {
    const [one, other] = pair.labels;
    pairs.append(element("li", "", `${one} ↔ ${other}: distance ${number(pair.distance)}`));
  }
  const suspects = element("ul", "suspects");
  for (const entry of diagnostics.suspected_mislabelled) {
    const distances = `${number(entry.distance_own)} vs ${number(entry.distance_other)}`;
    suspects.append(element("li", "", `example ${entry.example_id} labelled "${entry.label}" ` +
      `is closer to "${entry.closer_to}" (${distances})`));
  }
  body.replaceChildren(
    element("p", "", accuracy),
    element("h3", "", "Most confusable classes"),
    diagnostics.confusable_pairs.length ? pairs : note("Fewer than two classes."),
    element("h3", "", "Suspicious examples (outlined in red below)"),
    diagnostics.suspected_mislabelled.length
      ? suspects
      : note("None: every example is nearest its own class."),
  );
}

async function deleteClass(label, count) {
  if (!window.confirm(`Delete class "${label}" and its ${count} example(s)?`)) return;
  const name = state.collection;
  const path = collectionPath(name, "classes", labelSegment(label));
  await api("DELETE", path, undefined, { writes: name });
  say(`Deleted class "${label}".`);
  await refresh();
}

// ---------------------------------------------------------------------------------------------
// Adaptation: a background job per collection (POST .../adaptations), followed until it ends

const ADAPT_POLL_MS = 500;
const RUNNING = new Set(["running", "cancelling"]);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function showAdapter(detail) {
  const adapter = detail.adapter; // present only when the collection has one
  $("adaptation").hidden = false;
  $("remove-adapter").hidden = !adapter;
  $("adapter-state").textContent = !adapter
    ? "Not adapted: queries are compared in the model's own embedding space."
    : `Adapted: adapter ${adapter.version}, trained on revision ${adapter.trained_revision}` +
      (adapter.stale ? "; examples changed since: adapt again to train on them too." : ".");
}

async function adapt() {
  const name = state.collection;
  if (!name) throw new Error("Create or pick a collection first.");
  const job = await api("POST", collectionPath(name, "adaptations"));
  say(`Adapting "${name}" in the background (job ${job.id}).`);
  await follow(name, job);
}

/** Show a job of this collection that runs already (started elsewhere, or before a reload). */
async function resumeJob(name) {
  const { adaptations } = await api("GET", collectionPath(name, "adaptations"));
  const running = adaptations.find((job) => RUNNING.has(job.status));
  if (running && name === state.collection) await follow(name, running);
}

/** Poll the job until it ends; then the collection is shown as it is (adapted or not). */
async function follow(name, job) {
  state.job = { name, id: job.id };
  let current = job;
  showJob(current);
  while (RUNNING.has(current.status)) {
    await sleep(ADAPT_POLL_MS);
    if (!state.job || state.job.id !== job.id) return; // another collection was picked
    current = await api("GET", collectionPath(name, "adaptations", String(job.id)));
    showJob(current);
  }
  state.job = null;
  if (current.revision) {
    // The adoption is a write of the collection: later reads wait for it on any replica.
    state.revisions.set(name, Math.max(state.revisions.get(name) || 0, current.revision));
  }
  say(jobOutcome(current), current.status === "failed" ? "error" : "info");
  if (name === state.collection) await refresh();
}

function showJob(job) {
  const running = Boolean(job && RUNNING.has(job.status));
  $("adapt").disabled = running;
  $("cancel-adapt").hidden = !running;
  const bar = $("adapt-progress");
  bar.hidden = !running;
  bar.value = job ? job.progress.fraction : 0;
  const rate = job ? Math.round(job.progress.examples_per_second) : 0;
  $("adapt-status").textContent = !job
    ? ""
    : running
      ? `Job ${job.id}: ${percent(job.progress.fraction)} done, ${rate} examples/s` +
        (job.status === "cancelling" ? ", stopping…" : "")
      : jobOutcome(job);
}

/** What a finished job decided, with the held-out figures that decided it. */
function jobOutcome(job) {
  const figures = job.held_out;
  const compared = figures
    ? ` (held-out accuracy ${percent(figures.unadapted_accuracy)} unadapted, ` +
      `${percent(figures.adapted_accuracy)} adapted, over ${figures.examples} examples)`
    : "";
  if (job.decision === "adopted") return `Adopted adapter ${job.adapter_version}${compared}.`;
  if (job.decision === "kept_unadapted") {
    return `Kept unadapted: the adapter did not win by the margin${compared}.`;
  }
  if (job.status === "cancelled") return `Adaptation ${job.id} cancelled: nothing adopted.`;
  return `Adaptation ${job.id} ${job.status}: ${job.error || "no reason given"}`;
}

async function cancelAdaptation() {
  if (!state.job) return;
  const { name, id } = state.job;
  showJob(await api("DELETE", collectionPath(name, "adaptations", String(id))));
}

async function removeAdapter() {
  const name = state.collection;
  if (!window.confirm(`Remove the adapter of "${name}"? Queries go back to the model's space.`)) {
    return;
  }
  await api("DELETE", collectionPath(name, "adapter"), undefined, { writes: name });
  say(`Removed the adapter of "${name}".`);
  await refresh();
}

// ---------------------------------------------------------------------------------------------
// The drawing pad: black ink on white paper, like Omniglot; mouse, touch and pen alike

const pad = $("pad");
const ink = pad.getContext("2d");
let stroke = null; // the last point of the stroke being drawn

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  state.drawn = false;
}

function padPoint(event) {
  const box = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - box.left) * pad.width) / box.width,
    y: ((event.clientY - box.top) * pad.height) / box.height,
  };
}

function drawTo(point) {
  // A stroke as wide as one pixel of the model's 28x28 input: Omniglot's pen, scaled.
  ink.lineWidth = pad.width / 28;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.strokeStyle = "#000";
  ink.beginPath();
  ink.moveTo(stroke.x, stroke.y);
  ink.lineTo(point.x, point.y);
  ink.stroke();
  stroke = point;
  state.drawn = true;
}

pad.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "mouse" && event.button !== 0) return;
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  stroke = padPoint(event);
  drawTo(stroke); // a dot, for a tap
});
pad.addEventListener("pointermove", (event) => {
  if (!stroke) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
  for (const each of events.length ? events : [event]) drawTo(padPoint(each));
});
for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  pad.addEventListener(type, () => { stroke = null; });
}

// ---------------------------------------------------------------------------------------------
// Dropped or chosen image files

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}: ${reader.error}`));
    reader.readAsDataURL(file);
  });
}

async function addFiles(files) {
  const images = [...files].filter((file) => file.type.startsWith("image/"));
  const skipped = files.length - images.length;
  for (const file of images) state.drops.push({ name: file.name, url: await readAsDataUrl(file) });
  showDrops();
  if (skipped) say(`${skipped} file(s) skipped: not images.`, "error");
}

function showDrops() {
  const drops = $("drops");
  drops.hidden = !state.drops.length || isText();
  drops.replaceChildren(...state.drops.map((drop) => {
    const image = document.createElement("img");
    image.src = drop.url;
    image.alt = image.title = drop.name;
    return image;
  }));
}

function clearInput() {
  clearPad();
  state.drops = [];
  showDrops();
  $("text-input").value = "";
}

/**
 * What the next action sends, as the API's inputs: for a text model each non-blank line of the
 * textarea (several examples or queries at once); else the drawing (if any) and the dropped
 * files, as PNG/... data URLs.
 */
function pendingInputs() {
  let inputs;
  if (isText()) {
    const lines = $("text-input").value.split("\n").map((line) => line.trim());
    inputs = lines.filter(Boolean).map((text) => ({ text }));
  } else {
    const images = state.drops.map((drop) => drop.url);
    if (state.drawn) images.unshift(pad.toDataURL("image/png"));
    inputs = images.map((image) => ({ image }));
  }
  if (!inputs.length) throw new Error(words().missing);
  if (!state.collection) throw new Error("Create or pick a collection first.");
  return inputs;
}

// ---------------------------------------------------------------------------------------------
// Adding examples, classifying

async function addExamples(event) {
  event.preventDefault();
  const inputs = pendingInputs();
  const label = $("label").value.trim();
  const name = state.collection;
  const examples = inputs.map((input) => ({ label, ...input }));
  const answer = await api("POST", collectionPath(name, "support"), { examples }, { writes: name });
  clearInput();
  say(`Added ${answer.n_added} example(s) of "${label}".`);
  await refresh();
}

async function classify() {
  const inputs = pendingInputs();
  const name = state.collection;
  const topK = Number($("top-k").value) || 5;
  // Remembered for a while, so that "Right" and "Wrong, it is ..." can add them as examples.
  const body = { queries: inputs, top_k: topK, remember: true };
  if (!$("rejection-choice").hidden && $("rejection").value) body.rejection = $("rejection").value;
  const answer = await api("POST", collectionPath(name, "query"), body, { reads: name });
  quiet();
  const adapted = answer.adapter_version == null
    ? []
    : [note(`Compared in the space of adapter ${answer.adapter_version}.`)];
  $("results").replaceChildren(
    ...adapted,
    ...answer.results.map((result, index) => resultView(result, inputs[index])),
  );
}

function resultView(result, input) {
  const view = element("article", "result");
  const preview = input.text === undefined
    ? Object.assign(document.createElement("img"), { src: input.image, alt: "query" })
    : element("blockquote", "query-text", input.text);
  const headline = element("p", "headline");
  // With rejection (when the service has it), "known", "score" and "threshold" are present.
  const limit = `${number(result.score)} ${result.known ? "within" : "above"} the threshold ` +
    number(result.threshold);
  if (result.known === false) {
    headline.append(element("strong", "unknown", "unknown"));
    headline.append(element("span", "subtle", ` score ${limit}`));
  } else {
    headline.append(element("strong", "label", result.label));
    if ("threshold" in result) headline.append(element("span", "subtle", ` known: score ${limit}`));
  }
  const bars = element("ol", "bars");
  bars.append(...result.top_k.map(barView));
  const text = element("div", "");
  text.append(headline, bars);
  if (result.input_id !== undefined) text.append(feedbackView(result));
  view.append(preview, text);
  return view;
}

/** "Right" (when a class was given) and "Wrong, it is ...": the query becomes an example. */
function feedbackView(result) {
  const view = element("form", "feedback");
  if (result.label !== null) {
    const right = element("button", "right", "Right");
    right.type = "button";
    right.addEventListener("click", guarded(() => sendFeedback(result.input_id, result.label, view)));
    view.append(right);
  }
  const label = element("input", "");
  label.required = true;
  label.maxLength = 200;
  label.placeholder = "the right label";
  label.setAttribute("aria-label", "The right label");
  const wrong = element("button", "wrong", result.label === null ? "It is ..." : "Wrong, it is ...");
  wrong.type = "submit";
  view.append(wrong, label);
  view.addEventListener("submit", guarded((event) => {
    event.preventDefault();
    return sendFeedback(result.input_id, label.value.trim(), view);
  }));
  return view;
}

async function sendFeedback(inputId, label, view) {
  const name = state.collection;
  const body = { input_id: inputId, label };
  await api("POST", collectionPath(name, "feedback"), body, { writes: name });
  view.replaceChildren(note(`Added as an example of "${label}".`));
  say(`Added the query as an example of "${label}".`);
  await refresh();
}

function barView(prediction) {
  const row = element("li", "");
  const probability = prediction.probability; // null only where a class was rejected
  const fill = element("span", "fill");
  fill.style.width = `${Math.max(0, Math.min(1, probability || 0)) * 100}%`;
  const bar = element("span", "bar");
  bar.append(fill);
  row.append(
    element("span", "name", prediction.label),
    bar,
    element("span", "probability", typeof probability === "number" ? percent(probability) : "–"),
    element("span", "distance", `d ${number(prediction.distance)}`),
  );
  return row;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

const note = (text) => element("p", "subtle", text);
const percent = (value) =>
  value === 0 || value === 1
    ? `${value * 100}%`
    : `${(value * 100).toFixed(value > 0.999 || value < 0.001 ? 2 : 1)}%`;
const number = (value) => (typeof value === "number" ? value.toFixed(2) : "–");

// ---------------------------------------------------------------------------------------------
// Wiring

$("key-form").addEventListener("submit", guarded(useKey));
$("forget-key").addEventListener("click", forgetKey);
$("collection-select").addEventListener("change", guarded((e) => selectCollection(e.target.value)));
$("create-form").addEventListener("submit", guarded(createCollection));
$("support-form").addEventListener("submit", guarded(addExamples));
$("classify").addEventListener("click", guarded(classify));
$("adapt").addEventListener("click", guarded(adapt));
$("cancel-adapt").addEventListener("click", guarded(cancelAdaptation));
$("remove-adapter").addEventListener("click", guarded(removeAdapter));
$("clear").addEventListener("click", () => { clearInput(); quiet(); });
$("file-input").addEventListener("change", guarded(async (event) => {
  await addFiles(event.target.files);
  event.target.value = "";
}));
const input = $("input");
input.addEventListener("dragover", (event) => {
  event.preventDefault();
  input.classList.add("dropping");
});
input.addEventListener("dragleave", () => input.classList.remove("dropping"));
input.addEventListener("drop", guarded(async (event) => {
  input.classList.remove("dropping");
  // For a text model, dragged text lands in the textarea as usual; files are refused (unhandled,
  // the browser would leave the page to open them).
  if (isText() && !event.dataTransfer.files.length) return;
  event.preventDefault();
  if (isText()) throw new Error("This collection's model reads text: type or paste it.");
  await addFiles(event.dataTransfer.files);
}));

/** Start; while the service is still starting (503: loading, re-embedding), say so and retry. */
async function boot() {
  try {
    await start();
  } catch (error) {
    fail(error);
    if (error instanceof ApiError && error.status === 503) setTimeout(boot, 2000);
  }
}

clearPad();
boot();
