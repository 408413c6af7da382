// Forms that change something ask first: the question is the form's data-confirm. (No inline
// handlers: the dashboard's Content-Security-Policy runs scripts from /static only.)
document.addEventListener("submit", (event) => {
  const question = event.target.dataset ? event.target.dataset.confirm : undefined;
  if (question && !window.confirm(question)) {
    event.preventDefault();
  }
}, true);
