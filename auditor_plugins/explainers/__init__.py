"""Built-in explainers, one method per file (a package where a method needs several: ``srd/``)."""
