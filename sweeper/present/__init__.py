"""What a person sees, drawn from the domain's records: the live display, the summary and the tables that fit the
terminal (`console`, rich), the report page (`html`) and its figures (`figures`, Optuna's visualisation rebuilt
from the records of any engine), the model card and its plots (`card`). It imports no engine and no store."""
