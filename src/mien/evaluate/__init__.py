"""`mien evaluate`: how well a generator keeps the person and produces the requested expression.

  benchmark   the benchmark file format, its loader, and the builder of the shipped dev benchmark
  generators  the generator contract, the `copy` and `real` baselines, the registry
  metrics     the formulas, as pure functions on arrays (cosine, verification, ICC, Fréchet ...)
  run         one run: generate, analyse (cached), score, write results.json and report.html
  cache       the analysis cache: each image analysed once, keyed by content and analysis code
  scoring     analysed items -> the metrics of results.json, each with its definition
  report      report.html: tables, plots and image grids in one self-contained file
  compare     what changed between two results.json files

Every number comes with its definition in results.json; real-photo ceilings and floors sit beside
the generated figures. Action Unit values are estimates derived from MediaPipe blendshapes.
"""
