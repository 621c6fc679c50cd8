/* Housecall visit forms: hide the questions that do not apply (FHIR enableWhen on one earlier
   yes/no or choice question). The server decides the same on submit, so without this script every
   question shows, and the conditional ones say when to answer them. */
(function () {
  "use strict";
  var form = document.querySelector("form.visit-form");
  if (!form) { return; }
  function answer(link) {
    var checked = form.querySelector('input[name="q-' + link + '"]:checked');
    return checked ? checked.value : "";
  }
  function update() {
    form.querySelectorAll("[data-when]").forEach(function (el) {
      var on = answer(el.dataset.when) === el.dataset.whenValue;
      el.hidden = !on;
      var hint = el.querySelector(".hint[id$='-when']");
      if (hint) { hint.hidden = true; }
    });
  }
  form.addEventListener("change", update);
  update();
})();
