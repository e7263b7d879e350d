// Says on the placeholder page whether the services are ready (a file, not inline: the CSP allows no inline script).
fetch("/readyz").then(r => r.json()).then(body => {
  document.getElementById("status").textContent =
    body.status === "ready" ? "All services are ready: " + body.services.join(", ") + "." : "Not ready yet.";
}).catch(() => { document.getElementById("status").textContent = "The API did not answer."; });
