// Lodge's payment page: the card form (Stripe Elements). Everything it needs is in the data
// attributes of #card-form; the page has no inline script.
(function () {
  "use strict";
  var box = document.getElementById("card-form");
  if (!box || typeof Stripe === "undefined") {
    return;
  }
  var d = box.dataset;
  var stripe = Stripe(d.publishableKey);
  var elements = stripe.elements();
  var card = elements.create("card");
  card.mount("#card-element");
  var form = box.querySelector("form");
  var error = document.getElementById("card-error");
  var back = function (id) {
    window.location.assign(d.returnUrl + "?payment_intent=" + encodeURIComponent(id || d.intent));
  };
  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var button = form.querySelector("button");
    button.disabled = true;
    stripe
      .confirmCardPayment(d.clientSecret, { payment_method: { card: card } })
      .then(function (r) {
        if (r.error && !r.paymentIntent) {
          if (error) {
            error.textContent = r.error.message || "The card payment failed.";
          }
          button.disabled = false;
          back(d.intent);
          return;
        }
        back(r.paymentIntent ? r.paymentIntent.id : d.intent);
      });
  });
})();
