/* Try: the same prompt to two models (base and tuned, two runs, or a checkpoint), both answers streaming side by side. */
"use strict";
TF.page(async () => {
  const { el } = TF;
  const { data } = await TF.api("/ui/v1/models");
  const wanted = new URLSearchParams(location.search).get("model");
  const ids = data.map(m => m.id);
  const base = ids[0];
  const tuned = wanted && ids.includes(wanted) ? wanted : (ids.find(id => id.startsWith("ft:") && !id.includes(":ckpt-")) || ids[ids.length - 1]);
  const pick = (id, label, chosen) => el("div", { class: "field" }, el("label", { for: id }, label),
    el("select", { id }, ids.map(m => el("option", { value: m, selected: m === chosen }, m))));
  const left = pick("model-a", "Model A", base), right = pick("model-b", "Model B", tuned);
  const prompt = el("textarea", { id: "prompt", rows: 3, required: true });
  const maxTokens = el("input", { id: "max-tokens", type: "number", min: 1, max: 4096, value: 64 });
  const temperature = el("input", { id: "temperature", type: "number", min: 0, max: 2, step: "0.1", value: 0 });
  const answers = [el("output", { id: "answer-a", class: "answer", "aria-live": "polite" }),
                   el("output", { id: "answer-b", class: "answer", "aria-live": "polite" })];
  const metas = [el("p", { id: "meta-a", class: "muted" }), el("p", { id: "meta-b", class: "muted" })];
  const heads = [el("h2", {}, "A"), el("h2", {}, "B")];
  const form = el("form", { class: "card", onsubmit: send }, el("div", { class: "two" }, left, right),
    el("div", { class: "field" }, el("label", { for: "prompt" }, "Prompt"), prompt),
    el("div", { class: "two" }, el("div", { class: "field" }, el("label", { for: "max-tokens" }, "Max tokens"), maxTokens),
      el("div", { class: "field" }, el("label", { for: "temperature" }, "Temperature"), temperature)),
    el("button", { type: "submit", id: "send" }, "Send to both"));
  TF.render(form, el("div", { class: "two answers" }, el("section", {}, heads[0], answers[0], metas[0]), el("section", {}, heads[1], answers[1], metas[1])));
  prompt.addEventListener("keydown", e => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });

  async function stream(model, output, meta) {
    output.textContent = ""; output.classList.add("streaming"); output.dataset.done = ""; meta.textContent = "";
    let text = "", usage = null, finish = null;
    try {
      const response = await fetch("/ui/v1/chat/completions", { method: "POST", credentials: "same-origin",
        headers: { ...TF.HEADER, "Content-Type": "application/json" },
        body: JSON.stringify({ model, stream: true, stream_options: { include_usage: true }, max_tokens: Number(maxTokens.value) || 64, temperature: Number(temperature.value) || 0,
                               messages: [{ role: "user", content: prompt.value }] }) });
      if (!response.ok) { const body = await response.json(); throw new Error(body.error ? body.error.message : response.statusText); }
      await TF.readSSE(response, chunk => {
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          text += (choice.delta && choice.delta.content) || "";
          finish = choice.finish_reason || finish;
          output.textContent = text;
        }
      });
      output.replaceChildren(TF.answer(text));
      meta.textContent = `${usage ? usage.completion_tokens : "?"} token(s), finished: ${finish || "—"}`;
      if (usage) output.dataset.tokens = String(usage.completion_tokens);
    } catch (error) { output.textContent = `error: ${error.message}`; }
    output.classList.remove("streaming"); output.dataset.done = "1";
  }
  async function send(event) {
    event.preventDefault();
    const models = [left.querySelector("select").value, right.querySelector("select").value];
    heads.forEach((h, i) => { h.textContent = models[i]; });
    await Promise.all(models.map((m, i) => stream(m, answers[i], metas[i])));
  }
});
