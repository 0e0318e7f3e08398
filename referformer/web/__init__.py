"""``referformer serve``: a web page (Gradio) and an API endpoint to segment your own videos.

- :mod:`.models`: the models a page offers (``--checkpoint``, local model zoo, bundled) and the
  loaded predictors;
- :mod:`.runs`: one run without Gradio (inputs checked, its own folder, zip, previews, scores);
- :mod:`.example`: "generate a synthetic example";
- :mod:`.service`: what the page does, without Gradio;
- :mod:`.app`: the Gradio page and its ``segment`` endpoint (imports Gradio: the ``web`` extra).

Nothing here imports Gradio except :mod:`.app`, so the core install does not need it. This package
sits directly under ``referformer.commands``: the ``serve`` command hands it ``segment``'s
``segment_to_folder`` and ``demo``'s ``pick_expressions``. See docs/web.md.
"""
