/* Login: the API key becomes a session cookie (HttpOnly, SameSite=Strict); the key itself is not kept. */
"use strict";
TF.page(async () => {
  const { el } = TF;
  const input = el("input", { id: "api-key", name: "api_key", type: "password", autocomplete: "current-password", required: true,
                              "aria-describedby": "api-key-help login-error" });
  const problem = el("p", { id: "login-error", class: "error", role: "alert" });
  const form = el("form", { class: "card narrow", onsubmit: async event => {
    event.preventDefault();
    problem.textContent = "";
    try {
      await TF.api("/ui/login", { json: { api_key: input.value } });
      location.href = "/jobs";
    } catch (error) {
      problem.textContent = error.message;
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  } },
    el("label", { for: "api-key" }, "API key"), input,
    el("p", { id: "api-key-help", class: "muted" },
       "The key printed when the server first started; it is in $TUNEFORGE_HOME/api_key (or $TUNEFORGE_API_KEY)."),
    problem, el("button", { type: "submit" }, "Log in"));
  TF.render(form);
  input.focus();
});
