// Approve, reject or cancel a transition request through the registry's own routes. They
// check the caller's permission and the promotion rules; this only shows their answer.
const status = document.getElementById("queue-status");
const ROUTES = {
  approve: "/api/2.0/evtrack/registry/transition-requests/approve",
  reject: "/api/2.0/evtrack/registry/transition-requests/reject",
  cancel: "/api/2.0/evtrack/registry/transition-requests/cancel",
};
const DONE = { approve: "Approved", reject: "Rejected", cancel: "Cancelled" };

async function decide(button) {
  const action = button.dataset.action;
  const row = button.closest("tr");
  const cell = button.closest("td");
  const comment = cell.querySelector("input.comment");
  const buttons = cell.querySelectorAll("button");
  for (const b of buttons) b.disabled = true;
  let answer;
  try {
    const response = await fetch(ROUTES[action], {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({
        name: button.dataset.name,
        request_id: button.dataset.request,
        comment: comment && comment.value ? comment.value : undefined,
      }),
    });
    answer = { ok: response.ok, status: response.status, body: await response.json().catch(() => ({})) };
  } catch (error) {
    answer = { ok: false, status: 0, body: { message: String(error) } };
  }
  const label = `${button.dataset.name}, request ${button.dataset.request}`;
  if (answer.ok) {
    row.dataset.decided = action;
    const note = document.createElement("span");
    note.className = "decided";
    note.textContent = `${DONE[action]}.`;
    cell.replaceChildren(note);
    status.textContent = `${DONE[action]} ${label}.`;
    status.className = "";
  } else {
    for (const b of buttons) b.disabled = false;
    const message = answer.body.message || `HTTP ${answer.status}`;
    row.dataset.refused = String(answer.status);
    status.textContent = `Refused (${answer.status}): ${message}`;
    status.className = "error";
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action]");
  if (button) decide(button);
});
