// Starts Swagger UI on the service's own spec. When the service has API tokens, the spec needs
// one with the admin scope: the reader types it once; it stays in this tab's session storage
// and is put in Swagger UI's Authorize dialog, where another token can replace it.
"use strict";

const SPEC_URL = document.currentScript.dataset.spec;
const TOKEN_KEY = "otpservice-docs-token";

async function start() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const answer = await fetch(SPEC_URL, { headers });
  const form = document.getElementById("token-form");
  if (answer.status === 401 || answer.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token-refused").hidden = token === null;
    form.hidden = false;
    return;
  }
  form.hidden = true;
  window.ui = SwaggerUIBundle({
    spec: await answer.json(),
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
  });
  if (token) {
    window.ui.authActions.authorize({
      bearer: { name: "bearer", schema: { type: "http", scheme: "bearer" }, value: token },
    });
  }
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  start();
});
start();
