"""The web edge: the Gradio page's handlers (``page``), the REST API beside it (``rest``, at
``/api/v1`` on the same server), their start-up (``serve``) and the guards in front of both
(``guard``). It imports Gradio and FastAPI; ``app.py`` imports it; nothing in the core does.
"""
