"""The research side of MRI Cascade: data sources and their audits, evaluation and the benchmark, fitting
(calibration, operating points, the refusal check), model cards. It builds on the serving package; nothing in
the serving package imports it."""
