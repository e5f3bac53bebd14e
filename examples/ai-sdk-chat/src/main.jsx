import { createRoot } from "react-dom/client";
import { App } from "./App.jsx";
import { chatIdFromUrl } from "./weir.js";

createRoot(document.getElementById("root")).render(<App chatId={chatIdFromUrl()} />);
