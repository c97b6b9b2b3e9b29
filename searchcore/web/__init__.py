"""The web edge: the Gradio page's handlers (``page``), its start-up (``serve``) and the guards
in front of it (``guard``). It imports Gradio; ``app.py`` imports it; nothing in the core does.
"""
