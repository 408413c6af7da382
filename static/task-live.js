// The page of a task that has not finished follows it as it happens (GET /tasks/{id}/events):
// its state and progress change in place, and the whole page is shown again once it has
// finished (its result and attempts).
(function () {
  var page = document.getElementById('task-live');
  if (!page || !window.EventSource) { return; }
  var state = document.getElementById('task-state');
  var progress = document.getElementById('progress');
  var live = document.getElementById('live');
  var shown = state.textContent;
  var events = new EventSource('/tasks/' + encodeURIComponent(page.dataset.task) + '/events');
  var finished = function (s) { return s === 'SUCCESS' || s === 'FAILURE' || s === 'REVOKED'; };
  var show = function (s) {
    if (finished(s)) {
      events.close();
      if (s !== shown) { location.reload(); }
      return;
    }
    state.textContent = s;
  };
  events.addEventListener('status', function (m) {
    var s = JSON.parse(m.data);
    progress.textContent = s.progress + ' %';
    show(s.status);
  });
  events.addEventListener('state', function (m) { show(JSON.parse(m.data).state); });
  events.addEventListener('progress', function (m) { progress.textContent = JSON.parse(m.data).progress + ' %'; });
  events.onopen = function () { live.textContent = 'live'; };
  events.onerror = function () { live.textContent = 'reconnecting…'; };
})();
