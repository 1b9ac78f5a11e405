"""The Slurm backend: settings (``settings``), per-cell resources (``resources``), submission through
submitit (``submission``), the launcher (``launcher``) and what became of the jobs (``jobs``)."""
