"""The EHR's SMART style document becomes CSS variables; anything that could escape the declaration is dropped."""

from service.web.style import stylesheet


def test_known_keys_become_the_pages_variables():
    css = stylesheet({"color_background": "#fff", "color_text": "rgb(0, 0, 0)", "dim_border_radius": "4px",
                      "font_family_heading": "'Open Sans', Arial", "color_highlight": "navy"})
    assert css == (":root {\n  --bg: #fff;\n  --fg: rgb(0, 0, 0);\n  --accent: navy;\n  --radius: 4px;\n"
                   "  --font-heading: 'Open Sans', Arial;\n}\n")


def test_values_that_could_break_out_of_the_rule_are_dropped():
    hostile = {"color_background": "red; } body { display: none", "color_text": "url(https://x.example/a)",
               "dim_font_size": "12px;}", "font_family_body": "a{}", "color_error": "#12345g"}
    assert stylesheet(hostile) == ""


def test_not_a_style_document():
    assert stylesheet(None) == "" and stylesheet(["#fff"]) == "" and stylesheet({"color_text": 3}) == ""
