"""`toolrl analyze`: the behaviour analyses of ToRL and ReTool, from saved rollouts.

Pure parts (no IO, no engine, no plotting): ``purpose`` (code-purpose rules), ``features`` (numbers of one
response), ``metrics`` (numbers of a set of responses, the cross-benchmark average), ``analyze`` (series -> the
record everything else reads), ``tables`` (table contents). IO and drawing: ``sources`` (run directories ->
series), ``figures`` (PNG, matplotlib Agg), ``page`` (analysis.html), ``llm_labels`` (purpose labels from a
model through an Engine). docs/analysis.md defines every metric.
"""
