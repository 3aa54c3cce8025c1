// facesearch pages: the search page (upload, pick a face, results, filters), the face page, and the
// people pages (the grid of people, one person's faces: rename, merge, split, not this person).
// Plain JS on purpose: no build step. Face numbers are 0-based in the API and 1-based on screen.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function svgEl(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  return node;
}

// Seconds as m:ss (h:mm:ss from an hour), like the server's "clock" filter.
function clock(seconds) {
  const total = Math.floor(seconds || 0);
  const h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
  const ss = String(s).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

const megabytes = (bytes) => `${(bytes / 1e6).toFixed(1)} MB`;
const basename = (path) => path.split("/").pop();
const displayName = (person) => person.replaceAll("_", " ");

// Face boxes drawn over an image: the SVG's viewBox is the image's own pixel grid, so boxes given in
// source pixels land right whatever size the image is shown at.
function drawBoxes(svg, image, boxes, chosen, onPick) {
  const width = image.naturalWidth, height = image.naturalHeight;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.replaceChildren();
  const labelSize = Math.max(12, Math.round(Math.min(width, height) / 12));
  boxes.forEach((box, n) => {
    const [x1, y1, x2, y2] = box;
    const group = svgEl("g", { class: n === chosen ? "face chosen" : "face", "data-face": n });
    group.append(svgEl("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1 }));
    if (onPick) {
      const label = svgEl("text", { x: x1 + 2, y: Math.max(labelSize, y1 - 4), "font-size": labelSize });
      label.textContent = String(n + 1);
      group.append(label);
      group.setAttribute("role", "button");
      group.setAttribute("tabindex", "0");
      group.setAttribute("aria-label", `search for face ${n + 1}`);
      group.addEventListener("click", () => onPick(n));
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") onPick(n);
      });
    }
    svg.append(group);
  });
}

function whenLoaded(image, callback) {
  if (image.complete && image.naturalWidth) callback();
  else image.addEventListener("load", callback, { once: true });
}

function initSearch() {
  const app = document.getElementById("app");
  const urls = {
    search: app.dataset.searchUrl, similar: app.dataset.similarUrl, copies: app.dataset.copiesUrl,
    people: app.dataset.peopleUrl, videos: app.dataset.videosUrl,
  };
  const perPage = Number(app.dataset.perPage);
  const maxResults = Number(app.dataset.maxResults);
  const maxUpload = Number(app.dataset.maxUpload);
  const $ = (id) => document.getElementById(id);
  const message = $("message"), queryImage = $("query-image"), hits = $("hits"), more = $("more");
  // mode: "faces" searches with a face of the photo, "similar" with the photo as a whole, "copies"
  // for the same picture (its perceptual hash).
  const state = { file: null, face: null, k: perPage, preview: null, sent: 0, mode: "faces" };

  function showMessage(text, kind = "error") {
    message.textContent = text;
    message.className = `message ${kind}`;
    message.hidden = !text;
  }

  function useFile(file) {
    if (!file) return;
    if (file.size > maxUpload) {
      showMessage(`This file is ${megabytes(file.size)}; the limit is ${megabytes(maxUpload)}.`);
      return;
    }
    if (state.preview) URL.revokeObjectURL(state.preview);
    state.file = file;
    state.face = null;
    state.k = perPage;
    state.preview = URL.createObjectURL(file);
    queryImage.src = state.preview;
    $("query-boxes").replaceChildren();
    $("query-hint").textContent = "";
    $("query").hidden = false;
    search();
  }

  function formData() {
    const form = new FormData();
    form.append("image", state.file, state.file.name || "pasted-image");
    form.append("k", String(state.k));
    if (state.mode !== "faces") return form; // whole-photo searches take no face or filters
    if (state.face !== null) form.append("face", String(state.face));
    for (const [name, id] of [["person", "person"], ["video", "video"], ["media_type", "media-type"]]) {
      const value = $(id).value.trim();
      if (value) form.append(name, value);
    }
    const minimum = $("min-score").value.trim();
    if (minimum) form.append("min_score", String(Number(minimum) / 100));
    return form;
  }

  async function search() {
    if (!state.file) {
      showMessage("Choose, drop or paste a photo first.", "info");
      return;
    }
    const ticket = ++state.sent;
    showMessage("Searching…", "info");
    let response, body = null;
    try {
      const url = { faces: urls.search, similar: urls.similar, copies: urls.copies }[state.mode];
      response = await fetch(url, { method: "POST", body: formData() });
      body = await response.json();
    } catch (error) {
      if (ticket === state.sent) showMessage(`The server could not be reached or answered oddly (${error.message}).`);
      return;
    }
    if (ticket !== state.sent) return; // a newer search has been sent meanwhile
    if (!response.ok) {
      showMessage(body?.error?.message || `The server answered ${response.status}.`);
      hits.replaceChildren();
      $("summary").textContent = "";
      more.hidden = true;
      $("query-boxes").replaceChildren();
      $("query-hint").textContent = "";
      if (body?.error?.code === "invalid_image") $("query").hidden = true;
      return;
    }
    showMessage("");
    if (state.mode !== "faces") {
      $("query-boxes").replaceChildren();
      $("query-hint").textContent = "";
      if (state.mode === "similar") showPhotos(body);
      else showCopies(body);
      return;
    }
    showQueryFaces(body);
    showHits(body);
  }

  function showPhotos(body) {
    hits.replaceChildren(...body.hits.map((hit) => photoCard(hit)));
    $("summary").textContent = body.hits.length
      ? `${body.hits.length} photos that look most like yours, among ${body.photos.toLocaleString()}: ` +
        "similar as a whole (scene, objects, layout), whoever is in them."
      : "No photo has been described for this search yet: index the photos with --image-search.";
    more.hidden = body.hits.length < state.k || state.k >= maxResults;
  }

  function showCopies(body) {
    hits.replaceChildren(...body.duplicates.map(copyCard));
    $("summary").textContent = body.duplicates.length
      ? `${body.duplicates.length} copies of your photo in the archive, nearest first: their perceptual ` +
        `hashes differ from its own in at most ${body.max_distance} of 256 bits.`
      : `No copy of this photo in the archive: no indexed photo's perceptual hash is within ` +
        `${body.max_distance} of 256 bits of its own. Another photo of the same scene is not a copy; ` +
        "try Faces, or Similar photos.";
    more.hidden = body.duplicates.length < state.k || state.k >= maxResults;
  }

  // A copy is a photo's card that says how many hash bits it differs by.
  function copyCard(copy) {
    const card = photoCard(copy, copy.distance ? `${copy.distance} bits apart` : "identical hash");
    card.classList.add("copy");
    return card;
  }

  // A photo shows itself; a video's keyframe links to the video at its time.
  function photoCard(hit, score = `${Math.round(hit.score * 100)}%`) {
    const card = el("li", { class: "hit photo" });
    const video = hit.media_type === "video";
    let picture = el("div", { class: "no-thumbnail" }, video ? "video keyframe" : "file not served");
    if (hit.media_url && !video) picture = el("img", { src: hit.media_url, alt: basename(hit.source), loading: "lazy" });
    const target = video ? `${hit.media_url}#t=${hit.timestamp}` : hit.media_url;
    card.append(hit.media_url ? el("a", { href: target, class: "thumb" }, picture) : picture);
    card.append(el("p", { class: "score" }, score));
    const where = video ? `${basename(hit.source)} · ${clock(hit.timestamp)}` : basename(hit.source);
    card.append(el("p", { class: video ? "source video" : "source", title: hit.source }, where));
    return card;
  }

  function useMode(mode) {
    state.mode = mode;
    state.k = perPage;
    for (const [id, which] of [["tab-faces", "faces"], ["tab-copies", "copies"], ["tab-similar", "similar"]]) {
      if ($(id)) $(id).setAttribute("aria-selected", String(mode === which));
    }
    $("filters").hidden = mode !== "faces";
    hits.replaceChildren();
    $("summary").textContent = "";
    more.hidden = true;
    if (state.file) search();
  }

  function showQueryFaces(body) {
    const boxes = body.query_faces.map((face) => face.box);
    const pick = boxes.length > 1 ? (n) => { state.face = n; state.k = perPage; search(); } : null;
    whenLoaded(queryImage, () => drawBoxes($("query-boxes"), queryImage, boxes, body.face, pick));
    $("query-hint").textContent = boxes.length > 1
      ? `${boxes.length} faces found; searching for face ${body.face + 1}. Click another face to search for it.`
      : "";
  }

  function showHits(body) {
    hits.replaceChildren(...body.hits.map(hitCard));
    const faces = body.query_faces.length > 1 ? ` like face ${body.face + 1}` : "";
    $("summary").textContent = body.hits.length
      ? `${body.hits.length} most similar faces${faces}. ` + verdictSummary(body)
      : "No matching faces. Try fewer filters.";
    more.hidden = body.hits.length < state.k || state.k >= maxResults;
  }

  // What the verdicts on the cards rest on, and a plain word when none of them is confident.
  function verdictSummary(body) {
    const v = body.verdicts;
    if (!v) return "This model is not calibrated: scores only rank, they give no verdict.";
    const pct = (x) => `${Math.round(x * 100)}%`;
    const basis = v.fixed
      ? `Same person from ${pct(v.same_person_threshold)} (set by hand).`
      : `Same person from ${pct(v.same_person_threshold)}, possible from ${pct(v.possible_threshold)}: ` +
        `in an archive of ${v.gallery_size.toLocaleString()} faces, at most ${+(v.target_fpir * 100).toFixed(2)}% ` +
        "of searches for someone it does not hold get a \"same person\" card.";
    return (body.confident_match ? "" : "No confident match: this person may not be in the archive. ") + basis;
  }

  const VERDICT_LABELS = { same_person: ["same person", "verdict same"], possible: ["possible", "verdict possible"] };

  function hitCard(hit) {
    const card = el("li", { class: "hit" });
    const missing = (why) => el("div", { class: "no-thumbnail" }, why);
    let picture = missing("file not served");
    if (hit.thumbnail_url) {
      picture = el("img", { src: hit.thumbnail_url, alt: hit.person ? displayName(hit.person) : "unlabelled face", loading: "lazy" });
      picture.addEventListener("error", () => picture.replaceWith(missing("no preview")), { once: true });
    }
    card.append(el("a", { href: hit.face_url, class: "thumb" }, picture));
    const label = VERDICT_LABELS[hit.verdict];
    card.append(el("p", { class: "score" }, `${Math.round(hit.score * 100)}%`,
      label ? el("span", { class: label[1] }, label[0]) : ""));
    card.append(el("p", { class: hit.person ? "person" : "person unlabelled" },
      hit.person ? displayName(hit.person) : "unlabelled"));
    if (hit.media_type === "video") {
      const times = `${clock(hit.start ?? hit.timestamp)}–${clock(hit.end ?? hit.timestamp)}`;
      const line = el("p", { class: "source video" }, `${hit.video} · ${times}`);
      if (hit.media_url) line.append(" ", el("a", { href: `${hit.media_url}#t=${hit.start ?? hit.timestamp ?? 0}` }, "play"));
      card.append(line);
    } else {
      card.append(el("p", { class: "source", title: hit.source }, basename(hit.source)));
    }
    return card;
  }

  async function loadOptions(url, build) {
    try {
      const response = await fetch(url);
      if (response.ok) build(await response.json());
    } catch (error) {
      // Filters are a convenience; the search itself reports a server that is down.
    }
  }

  let typing = null;
  function suggestPeople() {
    clearTimeout(typing);
    typing = setTimeout(() => {
      const q = encodeURIComponent($("person").value.trim());
      loadOptions(`${urls.people}?limit=20&q=${q}`, (body) => {
        $("people").replaceChildren(...body.people.map((p) =>
          el("option", { value: p.person }, `${displayName(p.person)} (${p.faces})`)));
      });
    }, 200);
  }

  loadOptions(urls.videos, (body) => {
    $("video").append(...body.videos.map((v) => el("option", { value: v.video }, `${v.video} (${v.faces})`)));
    $("video-filter").hidden = body.videos.length === 0;
  });
  suggestPeople();

  $("tab-faces").addEventListener("click", () => useMode("faces"));
  $("tab-copies").addEventListener("click", () => useMode("copies"));
  // Similar photos is there only where that search is on.
  if ($("tab-similar")) $("tab-similar").addEventListener("click", () => useMode("similar"));
  $("file").addEventListener("change", (event) => useFile(event.target.files[0]));
  $("person").addEventListener("input", suggestPeople);
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    state.k = perPage;
    search();
  });
  for (const id of ["video", "media-type"]) $(id).addEventListener("change", () => state.file && $("apply").click());
  more.addEventListener("click", () => {
    state.k = Math.min(state.k + perPage, maxResults);
    search();
  });

  const drop = $("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    useFile(event.dataTransfer.files[0]);
  });
  // A photo dropped beside the zone must not make the browser leave the page to show it.
  for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());
  document.addEventListener("paste", (event) => {
    const item = [...event.clipboardData.items].find((i) => i.kind === "file" && i.type.startsWith("image/"));
    if (item) useFile(item.getAsFile());
  });
}

function initFace() {
  const image = document.getElementById("face-image");
  const svg = document.getElementById("face-box");
  if (!image || !svg) return;
  const box = svg.dataset.box.split(",").map(Number);
  whenLoaded(image, () => drawBoxes(svg, image, [box], 0, null));
}

// A human decision about people, sent as JSON (the API takes nothing else for a change); resolves
// to the answer, or shows the server's message and rejects.
async function decide(url, body) {
  const message = document.getElementById("message");
  message.hidden = true;
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    message.textContent = (answer.error && answer.error.message) || `the server answered ${response.status}`;
    message.className = "message error";
    message.hidden = false;
    throw new Error(message.textContent);
  }
  return answer;
}

const personUrl = (id, verb) => `/api/v1/persons/${encodeURIComponent(id)}/${verb}`;

// A name field renames its person on Enter or when it loses focus, if it changed.
function renameOnCommit(input, personId) {
  let saved = input.value;
  const commit = async () => {
    if (input.value.trim() === saved.trim()) return;
    try {
      const answer = await decide(personUrl(personId, "name"), { name: input.value });
      saved = input.value = answer.person.name || "";
      input.classList.add("saved");
    } catch (error) {
      input.value = saved;
    }
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") commit();
  });
  input.addEventListener("blur", commit);
}

// Ticked boxes enable a button once there are at least `least` of them.
function picked(button, least) {
  const boxes = [...document.querySelectorAll("input.pick")];
  const update = () => {
    button.disabled = boxes.filter((box) => box.checked).length < least;
  };
  boxes.forEach((box) => box.addEventListener("change", update));
  update();
  return () => boxes.filter((box) => box.checked).map((box) => box.value);
}

function initPeople() {
  for (const card of document.querySelectorAll(".person-card")) {
    renameOnCommit(card.querySelector(".rename"), card.dataset.person);
  }
  const merge = document.getElementById("merge");
  const selected = picked(merge, 2);
  merge.addEventListener("click", async () => {
    const cards = selected().map((id) => document.querySelector(`.person-card[data-person="${id}"]`));
    // Into the named one if there is one, else the one with the most faces.
    cards.sort((a, b) => (b.dataset.name ? 1 : 0) - (a.dataset.name ? 1 : 0) || b.dataset.faces - a.dataset.faces);
    const [into, ...others] = cards.map((card) => card.dataset.person);
    await decide(personUrl(into, "merge"), { others });
    window.location.reload();
  });
}

const VERDICT_WORDS = { same_person: "same person", possible: "possible" };

// One face that may be this person's, with a button that confirms it.
function candidateCard(hit, personId) {
  const image = hit.thumbnail_url ? el("img", { src: hit.thumbnail_url, alt: "a face that may be theirs" }) : "(file not served)";
  const add = el("button", { type: "button", class: "add-face", "data-face": hit.face_id }, "Add to this person");
  const card = el(
    "li",
    { class: "card candidate", "data-face": hit.face_id },
    el("a", { href: hit.face_url }, image),
    el("span", { class: "where" }, `${(hit.score * 100).toFixed(0)}% ${VERDICT_WORDS[hit.verdict] || ""}`),
    el("span", { class: "where" }, basename(hit.source)),
    add,
  );
  add.addEventListener("click", async () => {
    await decide(`/api/v1/faces/${encodeURIComponent(hit.face_id)}/person`, { person_id: personId });
    card.remove();
  });
  return card;
}

function initPerson() {
  const personId = document.getElementById("person").dataset.person;
  renameOnCommit(document.getElementById("name"), personId);
  const split = document.getElementById("split");
  const selected = picked(split, 1);
  split.addEventListener("click", async () => {
    const answer = await decide(personUrl(personId, "split"), { face_ids: selected() });
    window.location.assign(answer.person.person_url);
  });
  const more = document.getElementById("more");
  more.addEventListener("click", async () => {
    const response = await fetch(`/api/v1/persons/${encodeURIComponent(personId)}/more`, {
      headers: { Accept: "application/json" },
    });
    const answer = await response.json();
    const list = document.getElementById("candidate-list");
    list.replaceChildren(...answer.hits.map((hit) => candidateCard(hit, personId)));
    document.getElementById("candidates").hidden = false;
  });
  const hide = document.getElementById("hide");
  hide.addEventListener("click", async () => {
    await decide(personUrl(personId, "hide"), { hidden: hide.dataset.hidden !== "true" });
    window.location.reload();
  });
  for (const button of document.querySelectorAll(".not-this")) {
    button.addEventListener("click", async () => {
      await decide(`/api/v1/faces/${encodeURIComponent(button.dataset.face)}/person`, { person_id: null });
      window.location.reload();
    });
  }
  for (const button of document.querySelectorAll(".make-cover")) {
    button.addEventListener("click", async () => {
      await decide(personUrl(personId, "cover"), { face_id: button.dataset.face });
      window.location.reload();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const page = document.body.dataset.page;
  if (page === "search") initSearch();
  else if (page === "face") initFace();
  else if (page === "people") initPeople();
  else if (page === "person") initPerson();
});
