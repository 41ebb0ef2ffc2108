# A template that answers the wrong shape ({"message": ...}): its constraint must deny, saying so.
package gatekeeper.templates.broken

violation contains {"message": "forgot msg"} if input.review.object
