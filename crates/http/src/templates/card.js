// Lodge's payment page: the card form (Stripe Elements). Everything it needs is in the data
// attributes of #card-form; the page has no inline script.
(function () {
  "use strict";
  var box = document.getElementById("card-form");
  if (!box) {
    return;
  }
  var status = document.getElementById("card-status");
  if (typeof Stripe === "undefined") {
    // Stripe.js did not load (blocked, or Stripe unreachable): the button stays disabled.
    if (status) {
      status.textContent =
        "The card form could not be loaded: Stripe's script did not load (blocked, or " +
        "Stripe unreachable). Allow it, or pay another way.";
    }
    return;
  }
  var d = box.dataset;
  var stripe = Stripe(d.publishableKey);
  var elements = stripe.elements();
  var card = elements.create("card");
  card.mount("#card-element");
  var form = box.querySelector("form");
  var error = document.getElementById("card-error");
  // The return address may carry a query already (the invoices to pay next, the way back
  // to the store): the intent is added to it, not appended with a second "?".
  var back = function (id) {
    var url = new URL(d.returnUrl, window.location.href);
    url.searchParams.set("payment_intent", id || d.intent);
    window.location.assign(url.toString());
  };
  // Stripe.js is here and the card field mounted: the button may be used.
  form.querySelector("button").disabled = false;
  if (status) {
    status.hidden = true;
  }
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
          // A card number the form refused before Stripe was asked (mistyped, incomplete)
          // stays here with the message, to be corrected: going back told the customer the
          // payment was "being processed" (found by the payments audit). Any other error
          // (a decline, a connection lost after Stripe may have charged) goes back to the
          // page, which reads the intent and says where the payment stands.
          if (r.error.type === "validation_error") {
            return;
          }
          back(r.error.payment_intent ? r.error.payment_intent.id : d.intent);
          return;
        }
        back(r.paymentIntent ? r.paymentIntent.id : d.intent);
      });
  });
})();
