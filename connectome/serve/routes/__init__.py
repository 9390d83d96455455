"""The API's routes, one router per resource: jobs, their live events, published weights, the page."""
