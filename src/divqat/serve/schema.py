"""The OpenAPI description of a predict request, for the model actually served: its exact
input shape as array sizes, pixels in [0, 1], and an example (a blank image) that answers 200."""

SHAPE_PARAMETER = {
    "name": "X-Images-Shape",
    "in": "header",
    "required": False,
    "description": "The raw form's shape, N,C,H,W (with Content-Type: application/octet-stream)",
    "schema": {"type": "string", "pattern": "^[0-9]{1,6},[0-9]{1,6},[0-9]{1,6},[0-9]{1,6}$"},
}
ERROR = {"content": {"application/json": {"example": {"error": "one line saying what is wrong"}}}}


def nested_schema(input_shape: tuple[int, int, int], max_batch: int) -> dict:
    item: dict = {"type": "number", "minimum": 0, "maximum": 1}
    for size in reversed(input_shape):
        item = {"type": "array", "minItems": size, "maxItems": size, "items": item}
    return {"type": "array", "minItems": 1, "maxItems": max_batch, "items": item}


def predict_body(input_shape: tuple[int, int, int], max_batch: int) -> dict:
    c, h, w = input_shape
    blank = [[[0.0] * w for _ in range(h)] for _ in range(c)]
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "oneOf": [
                        {
                            "title": "nested lists",
                            "type": "object",
                            "required": ["images"],
                            "additionalProperties": False,
                            "properties": {"images": nested_schema(input_shape, max_batch)},
                        },
                        {
                            "title": "binary",
                            "type": "object",
                            "required": ["images_b64", "shape"],
                            "additionalProperties": False,
                            "properties": {
                                "images_b64": {
                                    "type": "string",
                                    "format": "byte",
                                    "description": f"base64 of N x {c} x {h} x {w} little-endian float32 in [0, 1]",
                                },
                                "shape": {
                                    "type": "array",
                                    "prefixItems": [
                                        {"type": "integer", "minimum": 1, "maximum": max_batch},
                                        *({"const": d} for d in input_shape),
                                    ],
                                    "minItems": 4,
                                    "maxItems": 4,
                                },
                                "dtype": {"type": "string", "enum": ["float32"], "default": "float32"},
                            },
                        },
                    ]
                },
                "example": {"images": [blank]},
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "description": f"N x {c} x {h} x {w} little-endian float32 in [0, 1]; the header "
                    "X-Images-Shape: N,C,H,W says N (the raw form: the cheapest to send and to read)",
                }
            },
        },
    }
