// Lint rules for the web app: TypeScript's recommended set and the rules of hooks.
import js from '@eslint/js';
import reactHooks from 'eslint-plugin-react-hooks';
import tseslint from 'typescript-eslint';

// Props whose value people read (or hear from a screen reader).
const TEXT_PROPS = ['label', 'placeholder', 'title', 'alt', 'aria-label', 'aria-description', 'header', 'subHeader',
  'message', 'helperText', 'errorText', 'text', 'cancelText', 'okText', 'doneText'].join('|');

export default tseslint.config(
  { ignores: ['dist', 'src/api/schema.d.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['src/**/*.{ts,tsx}'],
    plugins: { 'react-hooks': reactHooks },
    rules: {
      'react-hooks/rules-of-hooks': 'error',
      'react-hooks/exhaustive-deps': 'warn',
      // Texts people read live in src/texts.ts, so translations can follow: none written into the markup.
      'no-restricted-syntax': [
        'error',
        { selector: 'JSXText[value=/\\p{L}/u]', message: 'A text people read: put it in src/texts.ts.' },
        {
          selector: `JSXAttribute[name.name=/^(${TEXT_PROPS})$/] > Literal[value=/\\p{L}/u]`,
          message: 'A text people read: put it in src/texts.ts.',
        },
        {
          selector: `JSXAttribute[name.name=/^(${TEXT_PROPS})$/] > JSXExpressionContainer > Literal[value=/\\p{L}/u]`,
          message: 'A text people read: put it in src/texts.ts.',
        },
      ],
    },
  },
);
