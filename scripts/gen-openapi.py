#!/usr/bin/env python3
"""Writes crates/loopml/openapi.json: the OpenAPI 3.0 document `loopml server` publishes at
/openapi.json (MLflow publishes none). MLflow's REST API comes from MLflow's own protocol
buffers (the `mlflow` package in .venv: every RPC's endpoints, request message and fields), so
the document says exactly what the client sends; loopml's own routes are added by hand below.
The route-inventory test in crates/loopml/src/app.rs fails when the document names a path the
server does not serve. compat/mlflow/test_api_fuzz.py runs schemathesis against it.

Run after an MLflow upgrade: .venv/bin/python scripts/gen-openapi.py
"""

import json
import os

from google.protobuf.descriptor import FieldDescriptor as F
from mlflow.protos import databricks_pb2, model_registry_pb2, service_pb2

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "loopml", "openapi.json")

# MLflow RPCs loopml does not serve (Databricks-only, or not implemented yet), `METHOD /path`
# per line; listed so the document never names a route the server lacks (compat
# test_api_fuzz.py checks it), and so serving a new one is a one-line change.
with open(os.path.join(os.path.dirname(__file__), "openapi-not-served.txt")) as _f:
    NOT_SERVED = {line.strip() for line in _f if line.strip() and not line.startswith("#")}

SCALARS = {
    F.TYPE_DOUBLE: {"type": "number"},
    F.TYPE_FLOAT: {"type": "number"},
    F.TYPE_INT64: {"type": "integer", "format": "int64"},
    F.TYPE_UINT64: {"type": "integer", "format": "int64", "minimum": 0},
    F.TYPE_INT32: {"type": "integer", "format": "int32"},
    F.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    F.TYPE_FIXED64: {"type": "integer", "format": "int64"},
    F.TYPE_FIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_SFIXED64: {"type": "integer", "format": "int64"},
    F.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    F.TYPE_SINT64: {"type": "integer", "format": "int64"},
    F.TYPE_SINT32: {"type": "integer", "format": "int32"},
    F.TYPE_BOOL: {"type": "boolean"},
    F.TYPE_STRING: {"type": "string"},
    F.TYPE_BYTES: {"type": "string", "format": "byte"},
}

components: dict[str, dict] = {}


def ref(message) -> dict:
    name = message.full_name.replace(".", "_")
    if name not in components:
        components[name] = {}  # placeholder: recursion stops here
        components[name] = schema_of(message)
    return {"$ref": f"#/components/schemas/{name}"}


def field_schema(f) -> dict:
    if f.type == F.TYPE_MESSAGE:
        if f.message_type.full_name == "google.protobuf.Value":
            s = {}
        elif f.message_type.full_name in ("google.protobuf.Timestamp", "google.protobuf.Duration"):
            s = {"type": "string"}
        elif f.message_type.GetOptions().map_entry:
            return {"type": "object", "additionalProperties": field_schema(f.message_type.fields_by_name["value"])}
        else:
            s = ref(f.message_type)
    elif f.type == F.TYPE_ENUM:
        s = {"type": "string", "enum": [v.name for v in f.enum_type.values]}
    else:
        s = dict(SCALARS[f.type])
    if f.is_repeated:
        return {"type": "array", "items": s}
    return s


def schema_of(message) -> dict:
    # MLflow's JSON uses the proto field names (snake_case).
    props = {f.name: field_schema(f) for f in message.fields}
    return {"type": "object", "properties": props}


def query_params(message) -> list[dict]:
    out = []
    for f in message.fields:
        if f.type == F.TYPE_MESSAGE:
            continue
        s = field_schema(f)
        out.append({"name": f.name, "in": "query", "required": False, "schema": s,
                    **({"style": "form", "explode": True} if s.get("type") == "array" else {})})
    return out


def mlflow_paths() -> dict:
    paths: dict[str, dict] = {}
    for mod in (service_pb2, model_registry_pb2):
        for svc in mod.DESCRIPTOR.services_by_name.values():
            for m in svc.methods:
                rpc = m.GetOptions().Extensions[databricks_pb2.rpc]
                for ep in rpc.endpoints:
                    path = f"/api/{ep.since.major}.{ep.since.minor}{ep.path}"
                    path = path.replace("<", "{").replace(">", "}")
                    clean = "/".join(("{" + p.strip("{}").split(":")[-1].split(".")[-1] + "}")
                                     if p.startswith("{") else p for p in path.split("/"))
                    if f"{ep.method} {clean}" in NOT_SERVED:
                        continue
                    op = {"operationId": f"{m.name}_{ep.method}_{ep.since.major}{ep.since.minor}",
                          "tags": [svc.name],
                          "responses": {"200": {"description": "OK"},
                                        "default": {"description": "MLflow's error: {error_code, message}"}}}
                    params = [{"name": p.strip("{}").split(":")[-1].split(".")[-1], "in": "path", "required": True,
                               "schema": {"type": "string"}}
                              for p in path.split("/") if p.startswith("{")]
                    path = "/".join(("{" + p.strip("{}").split(":")[-1].split(".")[-1] + "}") if p.startswith("{") else p
                                    for p in path.split("/"))
                    if ep.method == "GET":
                        params += [q for q in query_params(m.input_type)
                                   if q["name"] not in {p["name"] for p in params}]
                    else:
                        op["requestBody"] = {"required": True, "content": {
                            "application/json": {"schema": ref(m.input_type)}}}
                    if params:
                        op["parameters"] = params
                    paths.setdefault(path, {})[ep.method.lower()] = op
    return paths


def loopml_paths() -> dict:
    obj = {"type": "object"}
    body = {"required": True, "content": {"application/json": {"schema": obj}}}
    ok = {"200": {"description": "OK"}, "default": {"description": "{error_code, message}"}}
    name = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/api/2.0/loopml/deployments": {"get": {"operationId": "listDeployments", "responses": ok},
                                        "post": {"operationId": "createDeployment", "requestBody": body, "responses": ok}},
        "/api/2.0/loopml/deployments/{name}": {
            "get": {"operationId": "getDeployment", "parameters": name, "responses": ok},
            "put": {"operationId": "replaceDeployment", "parameters": name, "requestBody": body, "responses": ok},
            "delete": {"operationId": "deleteDeployment", "parameters": name, "responses": ok}},
        "/api/2.0/loopml/monitors": {"get": {"operationId": "listMonitors", "responses": ok},
                                     "post": {"operationId": "createMonitor", "requestBody": body, "responses": ok}},
        "/api/2.0/loopml/monitors/{name}": {
            "get": {"operationId": "getMonitor", "parameters": name, "responses": ok},
            "delete": {"operationId": "deleteMonitor", "parameters": name, "responses": ok}},
        "/api/2.0/loopml/datasets": {"get": {"operationId": "listDatasets", "responses": ok}},
        "/v2/models/{name}/infer": {"post": {"operationId": "oipInfer", "parameters": name, "requestBody": {
            "required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["inputs"], "properties": {"inputs": {"type": "array", "items": {
                    "type": "object", "properties": {"name": {"type": "string"},
                                                     "shape": {"type": "array", "items": {"type": "integer"}},
                                                     "datatype": {"type": "string"},
                                                     "data": {"type": "array"}}}}}}}}},
            "responses": ok}},
        "/invocations": {"post": {"operationId": "mlflowInvocations", "requestBody": body, "responses": ok}},
    }


def main() -> None:
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "loopml", "version": "1",
                 "description": "MLflow's REST API (from MLflow's protocol buffers) and loopml's own routes."},
        "paths": {**mlflow_paths(), **loopml_paths()},
        "components": {"schemas": components},
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"{OUT}: {len(doc['paths'])} paths, {len(components)} schemas")


if __name__ == "__main__":
    main()
