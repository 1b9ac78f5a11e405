"""Planning cells (``cells``) and running them: ``run_cell`` is the one callable every launcher
runs; ``local`` runs cells in this process."""
