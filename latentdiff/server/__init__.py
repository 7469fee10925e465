"""`latentdiff serve`: a long-running HTTP server over `latentdiff.Pipeline`.

Modules, bottom-up: `config` (the validated options; no heavy imports), `models` (loaded pipelines in
an LRU under a memory budget), `jobs` (the bounded FIFO queue and its worker), `preview` (cheap step
previews), `http` (auth, body limits, JSON errors), `api` (our /v1 routes), `a1111` (the
AUTOMATIC1111 subset), `app` (assembly) and `run` (uvicorn, signals). `static/` holds the web page.
"""
