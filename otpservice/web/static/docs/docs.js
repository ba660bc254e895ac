// Starts Swagger UI on the service's own spec. When the service has API tokens, the spec needs
// one with the admin scope: the reader types it once; it stays in this tab's session storage
// and goes with every request the page makes ("Try it out" included).
"use strict";

const SPEC_URL = "openapi.json";
const TOKEN_KEY = "otpservice-docs-token";

function bearer() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: "Bearer " + token } : {};
}

async function start() {
  const answer = await fetch(SPEC_URL, { headers: bearer() });
  if (answer.status === 401 || answer.status === 403) {
    sessionStorage.removeItem(TOKEN_KEY);
    document.getElementById("token-form").hidden = false;
    return;
  }
  document.getElementById("token-form").hidden = true;
  window.ui = SwaggerUIBundle({
    spec: await answer.json(),
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    requestInterceptor: (request) => {
      Object.assign(request.headers, bearer());
      return request;
    },
  });
}

document.getElementById("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  start();
});
start();
