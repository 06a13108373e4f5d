"""The domain: what every layer shares and nothing depends on. The search space and its YAML reader (`space`,
`yaml_lines`: one file -> one frozen, validated SearchSpace; `SearchSpace.sample` alone knows its structure), the
records of trials and studies and the one mapping of a trial's end to its outcome (`records`), the events a sweep
tells its listener and the result it hands back (`events`), the engines' and formats' choices (`choices`), where the
embedded stores live (`places`), study-name and URL rules (`names`, `urls`), the errors (`errors`) and the words
(`wording`)."""
